//! diskshadow's own tables (`drive list`, `volume attachments`): a header row and aligned
//! columns, plain text whatever the terminal, so scripts can split them on whitespace (the
//! `--json` forms are the stable interface). DiskShadow's and vssadmin's Windows layouts are
//! rendered by the session, not here.

use comfy_table::{presets, ContentArrangement, Table};

/// The lines of a table with `header` and `rows`: columns two spaces apart, no borders, no
/// colours, no wrapping, no trailing spaces.
pub fn plain_table(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> Vec<String> {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .force_no_tty()
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for row in rows {
        table.add_row(row);
    }
    let columns = table.column_count();
    for (index, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if index + 1 == columns { 0 } else { 2 }));
    }
    table
        .lines()
        .map(|line| line.trim_end().to_string())
        .filter(|line| !line.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::plain_table;

    #[test]
    fn columns_are_aligned_without_borders_or_trailing_spaces() {
        let lines = plain_table(
            &["LETTER", "KIND", "PATH"],
            [
                vec!["C:".into(), "volume".into(), "/images/data.img".into()],
                vec!["Z:".into(), "directory".into(), "/mnt/z".into()],
            ],
        );
        assert_eq!(
            lines,
            [
                "LETTER  KIND       PATH",
                "C:      volume     /images/data.img",
                "Z:      directory  /mnt/z",
            ]
        );
    }

    #[test]
    fn an_empty_table_is_its_header() {
        assert_eq!(plain_table(&["A", "B"], Vec::new()), ["A  B"]);
    }
}
