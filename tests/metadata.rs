//! DiskShadow's metadata cabinet: written, listed by cabextract, read back, and rejected when
//! corrupt or foreign.

mod support;

use std::path::Path;
use std::process::Command;

use diskshadow::engine::cabinet::{
    manifest_text, read_metadata_cab, write_metadata_cab, BackupComponent, BackupComponents,
    BackupComponentsWriter, ManifestShadow, MetadataCabinet, WriterDocument,
};
use diskshadow::engine::ids::{ProviderId, ShadowId, ShadowSetId, WriterId, WriterInstanceId};
use diskshadow::engine::vss::{providers, BackupType, VssCode};
use diskshadow::engine::writer::metadata::{
    Component, ComponentType, DataSource, FileSpec, RestoreMethod, RestoreMethodKind, Usage,
    WriterMetadata, WriterRestore,
};
use uuid::Uuid;

fn writer_document(name: &str, number: u128) -> WriterDocument {
    let instance_id = WriterInstanceId(Uuid::from_u128(0x1_0000 + number));
    WriterDocument {
        name: name.to_string(),
        writer_id: WriterId(Uuid::from_u128(number)),
        instance_id,
        metadata: WriterMetadata {
            instance_id: Some(instance_id),
            usage: Usage::UserData,
            source: DataSource::TransactedDb,
            restore_method: RestoreMethod {
                method: RestoreMethodKind::RestoreAtRebootIfCannotReplace,
                writer_restore: WriterRestore::Always,
                reboot_required: true,
            },
            components: vec![
                Component {
                    name: "journal".to_string(),
                    logical_path: "data\\live".to_string(),
                    component_type: ComponentType::Database,
                    caption: "Journal & <index>".to_string(),
                    selectable: true,
                    selectable_for_restore: false,
                    notify_on_backup_complete: true,
                    files: vec![FileSpec {
                        volume: "/srv/vol/data.img".to_string(),
                        path: "/journal".to_string(),
                        filespec: "*.jnl".to_string(),
                        recursive: false,
                    }],
                },
                Component {
                    name: "settings".to_string(),
                    logical_path: String::new(),
                    component_type: ComponentType::Filegroup,
                    caption: String::new(),
                    selectable: false,
                    selectable_for_restore: true,
                    notify_on_backup_complete: false,
                    files: vec![FileSpec {
                        volume: "C:".to_string(),
                        path: "\\etc\\journal".to_string(),
                        filespec: "*.conf".to_string(),
                        recursive: true,
                    }],
                },
            ],
            excludes: vec![FileSpec {
                volume: "/srv/vol/data.img".to_string(),
                path: "/tmp".to_string(),
                filespec: "*".to_string(),
                recursive: true,
            }],
        },
    }
}

fn cabinet_with_writers() -> MetadataCabinet {
    let set = ShadowSetId(Uuid::from_u128(0xe109943b));
    let shadow = ShadowId(Uuid::from_u128(0xc1749777));
    let writers = vec![
        writer_document("Task Scheduler Writer", 1),
        writer_document("Journal Writer", 2),
    ];
    MetadataCabinet {
        snapshot_set_id: set,
        machine_name: "WIN2012-SQL17-2".to_string(),
        shadows: vec![ManifestShadow {
            shadow_id: shadow,
            alias: Some("LocVolumeShadow".to_string()),
            original_volume: "C:\\".to_string(),
            provider_id: ProviderId(providers::SYSTEM_PROVIDER_ID),
        }],
        aliases: vec![
            ("LocVolumeShadow".to_string(), shadow.to_string()),
            ("VSS_SHADOW_SET".to_string(), set.to_string()),
        ],
        backup_components: Some(BackupComponents {
            backup_type: BackupType::Full,
            writers: writers
                .iter()
                .map(|writer| BackupComponentsWriter {
                    writer_id: writer.writer_id,
                    instance_id: writer.instance_id,
                    components: vec![BackupComponent {
                        logical_path: "data\\live".to_string(),
                        name: "journal".to_string(),
                        component_type: ComponentType::Database,
                    }],
                })
                .collect(),
        }),
        writers,
        log_name: "Dis7A07.tmp".to_string(),
        log: "-> create\nAlias LocVolumeShadow for shadow ID ... set as environment variable.\n"
            .to_string(),
    }
}

#[test]
fn the_manifest_has_diskshadow_attribute_style() {
    let text = manifest_text(&cabinet_with_writers());
    assert_eq!(
        text,
        "<Manifest ><ShadowCopySet GUID = '{00000000-0000-0000-0000-0000e109943b}' MachineName = 'WIN2012-SQL17-2' >\
<ShadowCopy GUID = '{00000000-0000-0000-0000-0000c1749777}' Alias = 'LocVolumeShadow' OriginalVolume = 'C:\\' \
Provider = '{b5946137-7b9f-4925-af80-51abd60b20d5}' ></ShadowCopy></ShadowCopySet>\
<BackupComponents File = 'BCDocument.xml' ></BackupComponents><Aliases >\
<Alias Name = 'LocVolumeShadow' Value = '{00000000-0000-0000-0000-0000c1749777}' ></Alias>\
<Alias Name = 'VSS_SHADOW_SET' Value = '{00000000-0000-0000-0000-0000e109943b}' ></Alias></Aliases>\
<Writers Count = '2' ><Writer Name = 'Task%sScheduler%sWriter' MetadataFile = 'WM0.xml' ></Writer>\
<Writer Name = 'Journal%sWriter' MetadataFile = 'WM1.xml' ></Writer></Writers>\
<Logfile Name = 'Dis7A07.tmp' ></Logfile></Manifest>"
    );
}

#[test]
fn a_cabinet_round_trips_and_names_its_members_in_order() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("meta.cab");
    let cabinet = cabinet_with_writers();
    let inserted = write_metadata_cab(&path, &cabinet).expect("written");
    assert_eq!(
        inserted,
        [
            "Manifest.xml",
            "BCDocument.xml",
            "WM0.xml",
            "WM1.xml",
            "Dis7A07.tmp"
        ]
    );
    let loaded = read_metadata_cab(&path).expect("read back");
    assert_eq!(loaded, cabinet);

    // Manifest.xml is UTF-16LE without a BOM.
    let mut reader = cab::Cabinet::new(std::fs::File::open(&path).expect("open")).expect("cab");
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut reader.read_file("Manifest.xml").expect("member"),
        &mut bytes,
    )
    .expect("read");
    assert_eq!(&bytes[..4], b"<\0M\0", "no BOM, little endian");
    let mut wm = String::new();
    std::io::Read::read_to_string(&mut reader.read_file("WM1.xml").expect("member"), &mut wm)
        .expect("read");
    assert!(
        wm.contains("<WRITER_METADATA xmlns=\"x-schema:#VssWriterMetadataInfo\" version=\"1.2\">"),
        "{wm}"
    );
    assert!(
        wm.contains(
            "friendlyName=\"Journal Writer\" usage=\"USER_DATA\" dataSource=\"TRANSACTION_DB\""
        ),
        "{wm}"
    );
    assert!(
        wm.contains("<DATABASE logicalPath=\"data\\live\" componentName=\"journal\""),
        "{wm}"
    );
    assert!(wm.contains("filespecBackupType=\"3855\""), "{wm}");
    let mut bcd = String::new();
    std::io::Read::read_to_string(
        &mut reader.read_file("BCDocument.xml").expect("member"),
        &mut bcd,
    )
    .expect("read");
    assert!(bcd.contains("backupType=\"full\""), "{bcd}");
    assert!(
        bcd.contains("snapshotSetId=\"00000000-0000-0000-0000-0000e109943b\""),
        "{bcd}"
    );
}

#[test]
fn a_nowriters_cabinet_has_no_backup_components_document() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("0xdf.cab");
    let cabinet = MetadataCabinet {
        backup_components: None,
        writers: Vec::new(),
        ..cabinet_with_writers()
    };
    let inserted = write_metadata_cab(&path, &cabinet).expect("written");
    assert_eq!(inserted, ["Manifest.xml", "Dis7A07.tmp"]);
    assert_eq!(read_metadata_cab(&path).expect("read"), cabinet);
}

#[test]
fn cabextract_lists_the_cabinet() {
    if Command::new("cabextract")
        .arg("--version")
        .output()
        .is_err()
    {
        support::skip("cabextract is not installed (apt-get install cabextract)");
        return;
    }
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("meta.cab");
    write_metadata_cab(&path, &cabinet_with_writers()).expect("written");
    let listing = Command::new("cabextract")
        .arg("-l")
        .arg(&path)
        .output()
        .expect("cabextract runs");
    assert!(
        listing.status.success(),
        "{}",
        String::from_utf8_lossy(&listing.stderr)
    );
    let text = String::from_utf8_lossy(&listing.stdout);
    for member in [
        "Manifest.xml",
        "BCDocument.xml",
        "WM0.xml",
        "WM1.xml",
        "Dis7A07.tmp",
    ] {
        assert!(text.contains(member), "{member} missing from:\n{text}");
    }
    let test = Command::new("cabextract")
        .arg("-t")
        .arg(&path)
        .output()
        .expect("cabextract runs");
    assert!(
        test.status.success(),
        "cabextract -t: {}",
        String::from_utf8_lossy(&test.stdout)
    );
}

fn write_raw_cab(path: &Path, members: &[(&str, Vec<u8>)]) {
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

fn utf16(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

#[test]
fn corrupt_and_foreign_files_are_rejected_with_xml_document_codes() {
    let directory = tempfile::tempdir().expect("tempdir");

    let not_a_cab = directory.path().join("not.cab");
    std::fs::write(&not_a_cab, b"this is not a cabinet").expect("write");
    let error = read_metadata_cab(&not_a_cab).expect_err("not a cab");
    assert_eq!(error.vss_code(), VssCode::VSS_E_CORRUPT_XML_DOCUMENT);
    assert!(error.to_string().contains("not a cabinet"), "{error}");

    let foreign = directory.path().join("foreign.cab");
    write_raw_cab(&foreign, &[("readme.txt", b"hello".to_vec())]);
    let error = read_metadata_cab(&foreign).expect_err("foreign");
    assert_eq!(error.vss_code(), VssCode::VSS_E_INVALID_XML_DOCUMENT);
    assert!(error.to_string().contains("has no Manifest.xml"), "{error}");

    let garbled = directory.path().join("garbled.cab");
    write_raw_cab(
        &garbled,
        &[("Manifest.xml", utf16("<Manifest ><ShadowCopySet"))],
    );
    assert_eq!(
        read_metadata_cab(&garbled).expect_err("garbled").vss_code(),
        VssCode::VSS_E_CORRUPT_XML_DOCUMENT
    );

    let odd = directory.path().join("odd.cab");
    write_raw_cab(&odd, &[("Manifest.xml", b"<Manifest>".to_vec())]);
    assert_eq!(
        read_metadata_cab(&odd)
            .expect_err("utf-8 manifest")
            .vss_code(),
        VssCode::VSS_E_CORRUPT_XML_DOCUMENT
    );

    let incomplete = directory.path().join("incomplete.cab");
    write_raw_cab(
        &incomplete,
        &[(
            "Manifest.xml",
            utf16("<Manifest ><ShadowCopySet GUID = 'not-a-guid' ></ShadowCopySet></Manifest>"),
        )],
    );
    let error = read_metadata_cab(&incomplete).expect_err("invalid");
    assert_eq!(error.vss_code(), VssCode::VSS_E_INVALID_XML_DOCUMENT);
    assert!(error.to_string().contains("not a GUID"), "{error}");

    let missing_writer = directory.path().join("missing-writer.cab");
    write_raw_cab(
        &missing_writer,
        &[(
            "Manifest.xml",
            utf16(
                "<Manifest ><ShadowCopySet GUID = '{00000000-0000-0000-0000-000000000001}' ></ShadowCopySet>\
<Writers Count = '1' ><Writer Name = 'A' MetadataFile = 'WM0.xml' ></Writer></Writers>\
<Logfile Name = 'Dis0001.tmp' ></Logfile></Manifest>",
            ),
        )],
    );
    let error = read_metadata_cab(&missing_writer).expect_err("missing WM0.xml");
    assert_eq!(error.vss_code(), VssCode::VSS_E_INVALID_XML_DOCUMENT);
    assert!(error.to_string().contains("WM0.xml"), "{error}");
}

#[test]
fn a_loaded_cabinet_gives_the_writers_and_components_to_restore() {
    let cabinet = cabinet_with_writers();
    let restore = cabinet.restore_writers();
    assert_eq!(restore.len(), 2);
    assert_eq!(restore[1].name, "Journal Writer");
    assert_eq!(restore[1].components, ["\\data\\live\\journal"]);
}

#[test]
fn requester_metadata_deep_nesting_is_one_corrupt_document_error() {
    let directory = tempfile::tempdir().expect("tempdir");
    let deep = directory.path().join("deep.cab");
    support::cabs::write_deeply_nested_cab(&deep, 100_000);
    assert!(std::fs::metadata(&deep).expect("size").len() < 2 << 20);
    let error = read_metadata_cab(&deep).expect_err("too deep");
    assert_eq!(error.vss_code(), VssCode::VSS_E_CORRUPT_XML_DOCUMENT);
    let text = error.to_string();
    assert!(text.contains("Manifest.xml"), "{text}");
    assert!(text.contains("deeper than 64 levels"), "{text}");
}

#[test]
fn requester_metadata_corrupt_folder_offset_is_one_corrupt_member_error() {
    let directory = tempfile::tempdir().expect("tempdir");
    let corrupt = directory.path().join("corrupt.cab");
    support::cabs::write_cab_with_corrupt_folder_offset(&corrupt);
    let error = read_metadata_cab(&corrupt).expect_err("corrupt offset");
    assert_eq!(error.vss_code(), VssCode::VSS_E_CORRUPT_XML_DOCUMENT);
    let text = error.to_string();
    assert!(text.contains("Manifest.xml in"), "{text}");
    assert!(text.contains("corrupt.cab"), "{text}");
    assert!(
        text.contains("the cab reader failed on its entry"),
        "{text}"
    );
}

#[test]
fn requester_metadata_oversized_member_is_refused_before_it_is_read() {
    let directory = tempfile::tempdir().expect("tempdir");
    let big = directory.path().join("big.cab");
    support::cabs::write_raw_cab(&big, &[("Manifest.xml", vec![b' '; 5 << 20])]);
    let error = read_metadata_cab(&big).expect_err("too big");
    assert_eq!(error.vss_code(), VssCode::VSS_E_CORRUPT_XML_DOCUMENT);
    assert!(
        error
            .to_string()
            .contains("more than the 4 MiB a member may have"),
        "{error}"
    );
}
