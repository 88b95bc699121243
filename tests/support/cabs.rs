//! Hostile metadata cabinets, built with the `cab` crate and patched byte by byte.
#![allow(dead_code)]

use std::path::Path;

/// A cabinet of `members`, uncompressed, in one folder.
pub fn write_raw_cab(path: &Path, members: &[(&str, Vec<u8>)]) {
    let mut builder = cab::CabinetBuilder::new();
    {
        let folder = builder.add_folder(cab::CompressionType::None);
        for (name, _) in members {
            folder.add_file(name.to_string());
        }
    }
    let mut writer = builder
        .build(std::fs::File::create(path).expect("create"))
        .expect("build");
    let mut index = 0;
    while let Some(mut member) = writer.next_file().expect("next") {
        std::io::Write::write_all(&mut member, &members[index].1).expect("write");
        index += 1;
    }
    writer.finish().expect("finish");
}

pub fn utf16(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// A 4 KB-ish cabinet whose Manifest.xml nests `depth` elements.
pub fn write_deeply_nested_cab(path: &Path, depth: usize) {
    let text = format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
    write_raw_cab(path, &[("Manifest.xml", utf16(&text))]);
}

/// A cabinet whose first CFFILE says its data starts far past the end of its folder
/// (`uoffFolderStart`), which sends the cab crate's reader past its block table.
pub fn write_cab_with_corrupt_folder_offset(path: &Path) {
    write_raw_cab(path, &[("Manifest.xml", utf16("<Manifest ></Manifest>"))]);
    let mut bytes = std::fs::read(path).expect("read");
    // CFHEADER: coffFiles (u32) at byte 16. CFFILE: cbFile (u32), then uoffFolderStart (u32).
    let files = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes")) as usize;
    bytes[files + 4..files + 8].copy_from_slice(&0x00F0_0000u32.to_le_bytes());
    std::fs::write(path, bytes).expect("patch");
}

/// A cabinet in DiskShadow's form whose manifest carries `aliases` (`name`, `value`).
pub fn write_cab_with_aliases(path: &Path, aliases: &[(&str, &str)]) {
    let mut manifest = String::from(
        "<Manifest ><ShadowCopySet GUID = '{00000000-0000-0000-0000-000000000001}' ></ShadowCopySet>",
    );
    manifest.push_str("<Aliases >");
    for (name, value) in aliases {
        manifest.push_str(&format!(
            "<Alias Name = '{name}' Value = '{value}' ></Alias>"
        ));
    }
    manifest.push_str("</Aliases>");
    manifest.push_str("<Logfile Name = 'Dis0001.tmp' ></Logfile></Manifest>");
    write_raw_cab(
        path,
        &[
            ("Manifest.xml", utf16(&manifest)),
            ("Dis0001.tmp", b"log".to_vec()),
        ],
    );
}
