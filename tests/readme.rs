//! README.md carries the language reference generated from the command registry. This test
//! fails when they differ; `UPDATE_README=1 cargo test --test readme` rewrites the section.

use std::fs;
use std::path::PathBuf;

const BEGIN: &str = "<!-- BEGIN LANGUAGE REFERENCE -->\n";
const END: &str = "<!-- END LANGUAGE REFERENCE -->";

#[test]
fn readme_language_reference_matches_the_registry() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = fs::read_to_string(&path).expect("README.md");
    let start = readme.find(BEGIN).expect("README has the BEGIN marker") + BEGIN.len();
    let end = readme.find(END).expect("README has the END marker");
    let generated = diskshadow::session::reference::markdown_reference();
    if std::env::var_os("UPDATE_README").is_some() {
        let updated = format!("{}{}{}", &readme[..start], generated, &readme[end..]);
        fs::write(&path, updated).expect("README.md written");
        return;
    }
    assert_eq!(
        &readme[start..end],
        generated,
        "README.md's language reference is stale: run UPDATE_README=1 cargo test --test readme"
    );
}
