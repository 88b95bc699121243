//! The one drive-letter parser, shared by the language (`syntax`), the engine, the service and
//! the commands: a leaf that reaches no other room, so every room may use it.

/// `C:`, `c:`, `C:\` or `C:/` as an upper-case drive letter; anything else (`cc`, `1:`, a
/// path inside the drive such as `C:\dir`) is not one.
pub fn parse(text: &str) -> Option<char> {
    let mut chars = text.chars();
    let letter = chars.next()?;
    if !letter.is_ascii_alphabetic() || chars.next()? != ':' {
        return None;
    }
    let rest = chars.as_str();
    let is_root = rest == "/" || rest.chars().all(|character| character == '\\');
    is_root.then(|| letter.to_ascii_uppercase())
}

/// A Windows path on a drive, `c:\\dir\\file` or `c:/dir/file`, as its upper-case letter and
/// what follows the first separator; anything else (`c:`, `dir\\file`, `\\\\host\\share`) is not.
pub fn split_path(text: &str) -> Option<(char, &str)> {
    let bytes = text.as_bytes();
    let is_drive_path = bytes.len() >= 3
        && bytes[0].is_ascii_alphabetic()
        && bytes[1] == b':'
        && (bytes[2] == b'\\' || bytes[2] == b'/');
    is_drive_path.then(|| (char::from(bytes[0]).to_ascii_uppercase(), &text[3..]))
}

#[cfg(test)]
mod tests {
    use super::{parse, split_path};

    #[test]
    fn a_drive_letter_is_a_letter_and_a_colon_at_the_drive_root() {
        for (text, letter) in [("C:", 'C'), ("c:", 'C'), ("z:\\", 'Z'), ("d:/", 'D')] {
            assert_eq!(parse(text), Some(letter), "{text}");
        }
        for text in [
            "", "c", "cc", "1:", "é:", ":", "c:\\dir", "c:/dir", "c:x", "c:\\/",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
    }

    #[test]
    fn a_path_on_a_drive_splits_at_its_first_separator() {
        assert_eq!(split_path("c:\\dir\\file"), Some(('C', "dir\\file")));
        assert_eq!(split_path("D:/dir/file"), Some(('D', "dir/file")));
        assert_eq!(split_path("e:\\"), Some(('E', "")));
        for text in ["c:", "dir\\file", "\\\\host\\share", "1:\\x", "cc\\x"] {
            assert_eq!(split_path(text), None, "{text}");
        }
    }
}
