//! `vssadmin` over an in-process service: each command line and its output, as one snapshot.

mod support;

use chrono::FixedOffset;
use diskshadow::engine::model::{DriveTarget, RequesterId};
use diskshadow::service::local::LocalService;
use diskshadow::service::ShadowService;
use diskshadow::session::render::TimeZoneChoice;
use diskshadow::vssadmin;

#[test]
fn vssadmin_commands_over_the_same_store() {
    let work = support::scratch("vssadmin");
    let image = work.join("system.img");
    std::fs::File::create(&image)
        .and_then(|file| file.set_len(2 << 30))
        .expect("image");
    support::apply_directives(
        "#! writer journal.toml Journal_Writer {6f1b9d7e-3c2a-4e5f-9a8b-1c2d3e4f5a6b} --component journal=C:",
        &work,
    );
    let engine = support::open_engine(&work.join("store"));
    let mut service = LocalService::with_core(support::service_core(engine), RequesterId(7));
    service
        .map_drive('C', DriveTarget::Volume(image))
        .expect("drive map");
    let zone = TimeZoneChoice::Fixed(FixedOffset::east_opt(0).expect("UTC"));
    let lines = [
        ("", "list shadows"),
        ("", "create shadow /for=C:"),
        ("", "Create Shadow /For=c:"),
        ("", "list shadows /for=C:"),
        ("", "list providers"),
        ("", "list volumes"),
        ("", "list shadowstorage"),
        ("", "resize shadowstorage /for=C: /on=C: /maxsize=20%"),
        ("", "resize shadowstorage /for=C: /on=C: /maxsize=100MB"),
        ("", "add shadowstorage /for=C: /on=D: /maxsize=1GB"),
        ("", "list shadowstorage /for=C:"),
        ("n\n", "delete shadows /for=C: /oldest"),
        ("", "delete shadows /for=C: /oldest /quiet"),
        ("", "list shadows"),
        ("", "query reverts"),
        (
            "",
            "revert shadow /shadow={00000000-0000-0000-0000-000000000000}",
        ),
        ("", "list shadows /bogus"),
        ("", "frobnicate shadows"),
        ("", "list writers"),
        ("y\n", "delete shadows /all"),
        ("", "list shadows"),
    ];
    let mut transcript = String::new();
    for (answer, line) in lines {
        let arguments: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let mut confirm = std::io::Cursor::new(answer.as_bytes().to_vec());
        let outcome = vssadmin::run(&mut service, &arguments, &work, zone, &mut confirm);
        transcript.push_str(&format!("$ vssadmin {line}\n"));
        for out in outcome.stdout.iter().skip(vssadmin::BANNER.len() + 1) {
            transcript.push_str(&format!("{out}\n"));
        }
        for err in &outcome.stderr {
            transcript.push_str(&format!("! {err}\n"));
        }
        transcript.push_str(&format!("[exit status: {}]\n", outcome.status));
    }
    insta::with_settings!({snapshot_path => "../snapshots/vssadmin", prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::assert_snapshot!("vssadmin", transcript);
    });
}
