//! Which kernel NBD devices (`/dev/nbdN`) show an attached volume: the service lists its NBD
//! attachments (`diskshadow volume attachments`: the volume and the export's URI), and the
//! kernel names the process that holds each connected device (`/sys/block/nbdN/pid`, the
//! `nbd-client` that connected it, and `backend`, the identifier a netlink client left); a
//! device whose client's command line (or identifier) names an attachment's socket (or port)
//! and export is that attachment's volume.
//!
//! The roots of sysfs and procfs are parameters so that the matching is tested on a made-up
//! tree where the nbd kernel module is not available.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// An attached volume served as an NBD export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdExport {
    /// The volume as a set names it: its image path (its `{GUID}` when only a drive is shown).
    pub volume: String,
    /// The Unix socket's path, or the TCP port.
    pub endpoint: String,
    /// The export name.
    pub name: String,
}

/// `nbd+unix:///NAME?socket=PATH` or `nbd://HOST:PORT/NAME` as (endpoint, name).
pub fn parse_nbd_uri(uri: &str) -> Option<(String, String)> {
    if let Some(rest) = uri.strip_prefix("nbd+unix:///") {
        let (name, query) = rest.split_once('?')?;
        let socket = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("socket="))?;
        return Some((socket.to_string(), name.to_string()));
    }
    let rest = uri.strip_prefix("nbd://")?;
    let (authority, name) = rest.split_once('/')?;
    let port = authority.rsplit_once(':').map_or("10809", |(_, port)| port);
    Some((port.to_string(), name.to_string()))
}

/// The NBD exports among the lines of `diskshadow volume attachments`:
/// `\\?\Volume{GUID}\ [PATH]  NAME  LOCATION`.
pub fn parse_attachments(listing: &str) -> Vec<NbdExport> {
    listing
        .lines()
        .filter_map(|line| {
            let location = line.split_whitespace().last()?;
            let (endpoint, name) = parse_nbd_uri(location)?;
            let guid = line
                .split_once('{')
                .and_then(|(_, rest)| rest.split_once('}'))
                .map(|(guid, _)| format!("{{{guid}}}"))?;
            let path = line
                .split_once(" [")
                .and_then(|(_, rest)| rest.split_once(']'))
                .map(|(path, _)| path.to_string())
                .filter(|path| path.starts_with('/'));
            Some(NbdExport {
                volume: path.unwrap_or(guid),
                endpoint,
                name,
            })
        })
        .collect()
}

/// True when the command line `arguments` of an NBD client connects to `export`.
fn client_connects_to(arguments: &[String], export: &NbdExport) -> bool {
    let names_endpoint = arguments.iter().any(|argument| {
        argument == &export.endpoint
            || (export.endpoint.starts_with('/') && argument.contains(&export.endpoint))
    });
    let names_export = arguments.iter().any(|argument| {
        argument == &export.name
            || argument.contains(&format!("/{}?", export.name))
            || argument.ends_with(&format!("/{}", export.name))
    });
    names_endpoint && names_export
}

/// Each connected `nbdN` under `sys_block` whose client (its `pid`, looked up under `proc`)
/// connects to one of `exports`, as `/dev/nbdN` → volume.
pub fn nbd_devices(
    sys_block: &Path,
    proc: &Path,
    exports: &[NbdExport],
) -> BTreeMap<String, String> {
    let mut devices = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(sys_block) else {
        return devices;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.starts_with("nbd") {
            continue;
        }
        // `pid` exists only while the device is connected; it names the client when it stays
        // (nbd-client -nonetlink, qemu-nbd -c). A client that configured the device over
        // netlink and exited may have left an identifier in `backend` (nbd-client -i).
        let Ok(pid) = std::fs::read_to_string(entry.path().join("pid")) else {
            continue;
        };
        let mut arguments: Vec<String> = std::fs::read(proc.join(pid.trim()).join("cmdline"))
            .unwrap_or_default()
            .split(|byte| *byte == 0)
            .filter(|argument| !argument.is_empty())
            .map(|argument| String::from_utf8_lossy(argument).to_string())
            .collect();
        if let Ok(backend) = std::fs::read_to_string(entry.path().join("backend")) {
            arguments.extend(backend.split_whitespace().map(str::to_string));
        }
        if let Some(export) = exports
            .iter()
            .find(|export| client_connects_to(&arguments, export))
        {
            devices.insert(format!("/dev/{name}"), export.volume.clone());
        }
    }
    devices
}

/// The NBD devices connected to the attachments of the service of `store`; empty when the
/// service cannot be asked (the writer then knows only the devices given with `--device`).
pub fn discover(store: &Path) -> BTreeMap<String, String> {
    let program = std::env::current_exe()
        .ok()
        .and_then(|me| me.parent().map(|directory| directory.join("diskshadow")))
        .filter(|sibling| sibling.is_file())
        .map_or_else(|| "diskshadow".into(), |sibling| sibling.into_os_string());
    let Ok(output) = Command::new(program)
        .arg("--store")
        .arg(store)
        .args(["volume", "attachments"])
        .output()
    else {
        return BTreeMap::new();
    };
    if !output.status.success() {
        return BTreeMap::new();
    }
    let exports = parse_attachments(&String::from_utf8_lossy(&output.stdout));
    if exports.is_empty() {
        return BTreeMap::new();
    }
    nbd_devices(Path::new("/sys/block"), Path::new("/proc"), &exports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(volume: &str, endpoint: &str, name: &str) -> NbdExport {
        NbdExport {
            volume: volume.into(),
            endpoint: endpoint.into(),
            name: name.into(),
        }
    }

    #[test]
    fn nbd_uris_give_the_endpoint_and_the_export_name() {
        assert_eq!(
            parse_nbd_uri("nbd+unix:///data?socket=/run/ds/data.sock"),
            Some(("/run/ds/data.sock".into(), "data".into()))
        );
        assert_eq!(
            parse_nbd_uri("nbd://127.0.0.1:10810/logs"),
            Some(("10810".into(), "logs".into()))
        );
        assert_eq!(
            parse_nbd_uri("nbd://localhost/logs"),
            Some(("10809".into(), "logs".into()))
        );
        assert_eq!(parse_nbd_uri("/mnt/attached"), None);
        assert_eq!(parse_nbd_uri("nbd+unix:///data"), None);
    }

    #[test]
    fn attachment_lines_give_the_nbd_exports_by_image_path_or_guid() {
        let listing = "\\\\?\\Volume{11111111-2222-3333-4444-555555555555}\\ [/srv/data.img]  nbd+unix:///data?socket=/run/d.sock  nbd+unix:///data?socket=/run/d.sock\n\
             \\\\?\\Volume{66666666-2222-3333-4444-555555555555}\\ [/srv/fuse.img]  /mnt/a  /mnt/a\n\
             \\\\?\\Volume{77777777-2222-3333-4444-555555555555}\\ [E:\\]  nbd://127.0.0.1:10811/e  nbd://127.0.0.1:10811/e\n\
             3 volumes attached.\n";
        assert_eq!(
            parse_attachments(listing),
            vec![
                export("/srv/data.img", "/run/d.sock", "data"),
                export("{77777777-2222-3333-4444-555555555555}", "10811", "e"),
            ]
        );
    }

    #[test]
    fn connected_nbd_devices_are_matched_to_attachments_through_their_client() {
        let root = tempfile::tempdir().expect("temp");
        let (sys_block, proc) = (root.path().join("block"), root.path().join("proc"));
        let device = |name: &str, pid: Option<&str>| {
            let directory = sys_block.join(name);
            std::fs::create_dir_all(&directory).expect("device");
            if let Some(pid) = pid {
                std::fs::write(directory.join("pid"), format!("{pid}\n")).expect("pid");
            }
        };
        let client = |pid: &str, arguments: &[&str]| {
            std::fs::create_dir_all(proc.join(pid)).expect("proc");
            let mut line = arguments.join("\0");
            line.push('\0');
            std::fs::write(proc.join(pid).join("cmdline"), line).expect("cmdline");
        };
        device("nbd0", Some("100"));
        client(
            "100",
            &[
                "nbd-client",
                "-unix",
                "/run/d.sock",
                "-N",
                "data",
                "/dev/nbd0",
            ],
        );
        device("nbd1", Some("101"));
        client(
            "101",
            &["nbd-client", "127.0.0.1", "10811", "-N", "e", "/dev/nbd1"],
        );
        // Connected to another server's export of the same name: not ours.
        device("nbd2", Some("102"));
        client(
            "102",
            &[
                "nbd-client",
                "-unix",
                "/run/other.sock",
                "-N",
                "data",
                "/dev/nbd2",
            ],
        );
        // Not connected (no pid), and a client that has gone.
        device("nbd3", None);
        device("nbd4", Some("999"));
        // Configured over netlink by a client that has exited, with its identifier left.
        device("nbd5", Some("998"));
        std::fs::write(
            sys_block.join("nbd5/backend"),
            "nbd+unix:///data?socket=/run/d.sock\n",
        )
        .expect("backend");
        device("loop0", Some("100"));
        let exports = [
            export("/srv/data.img", "/run/d.sock", "data"),
            export("{77777777-2222-3333-4444-555555555555}", "10811", "e"),
        ];
        let found = nbd_devices(&sys_block, &proc, &exports);
        let expected: BTreeMap<String, String> = [
            ("/dev/nbd0".to_string(), "/srv/data.img".to_string()),
            ("/dev/nbd5".to_string(), "/srv/data.img".to_string()),
            (
                "/dev/nbd1".to_string(),
                "{77777777-2222-3333-4444-555555555555}".to_string(),
            ),
        ]
        .into();
        assert_eq!(found, expected);
        assert!(nbd_devices(&root.path().join("absent"), &proc, &exports).is_empty());
    }
}
