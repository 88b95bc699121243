//! A small element tree read with quick-xml, so the metadata documents can be walked simply.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// One XML element with its attributes and child elements (text is not kept: the metadata
/// documents hold everything in attributes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub name: String,
    pub attributes: Vec<(String, String)>,
    pub children: Vec<Element>,
}

impl Element {
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn children_named<'e>(&'e self, name: &'e str) -> impl Iterator<Item = &'e Element> + 'e {
        self.children.iter().filter(move |child| child.name == name)
    }

    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|child| child.name == name)
    }
}

/// Why a document could not be read as XML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct XmlSyntaxError(pub String);

fn element_from(start: &BytesStart<'_>) -> Result<Element, XmlSyntaxError> {
    let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
    let mut attributes = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute
            .map_err(|error| XmlSyntaxError(format!("bad attribute in <{name}>: {error}")))?;
        let key = String::from_utf8_lossy(attribute.key.as_ref()).into_owned();
        let value = attribute
            .unescape_value()
            .map_err(|error| XmlSyntaxError(format!("bad attribute value in <{name}>: {error}")))?
            .into_owned();
        attributes.push((key, value));
    }
    Ok(Element {
        name,
        attributes,
        children: Vec::new(),
    })
}

/// The deepest element nesting a metadata document may have. DiskShadow's documents nest
/// about eight levels; the bound keeps a hostile document from building a tree whose
/// recursive walks and drop overflow the stack.
pub const MAX_DEPTH: usize = 64;

/// The most elements one metadata document may hold.
pub const MAX_ELEMENTS: usize = 100_000;

/// Parses a whole document and returns its root element. Nesting deeper than [`MAX_DEPTH`]
/// or more than [`MAX_ELEMENTS`] elements is an error, and so is a panic of the XML reader.
pub fn parse(text: &str) -> Result<Element, XmlSyntaxError> {
    super::guard::catch_panic(|| parse_bounded(text))
        .unwrap_or_else(|panic| Err(XmlSyntaxError(format!("the XML reader failed: {panic}"))))
}

fn parse_bounded(text: &str) -> Result<Element, XmlSyntaxError> {
    let mut reader = Reader::from_str(text);
    let mut elements = 0usize;
    let mut count = |reader: &Reader<&[u8]>| {
        elements += 1;
        if elements > MAX_ELEMENTS {
            return Err(XmlSyntaxError(format!(
                "at byte {}: more than {MAX_ELEMENTS} elements",
                reader.buffer_position()
            )));
        }
        Ok(())
    };
    let mut stack: Vec<Element> = Vec::new();
    let mut root = None;
    loop {
        let event = reader.read_event().map_err(|error| {
            XmlSyntaxError(format!("at byte {}: {error}", reader.buffer_position()))
        })?;
        match event {
            Event::Start(start) => {
                count(&reader)?;
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlSyntaxError(format!(
                        "at byte {}: elements nest deeper than {MAX_DEPTH} levels",
                        reader.buffer_position()
                    )));
                }
                stack.push(element_from(&start)?);
            }
            Event::Empty(start) => {
                count(&reader)?;
                let element = element_from(&start)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None if root.is_none() => root = Some(element),
                    None => return Err(XmlSyntaxError("more than one root element".to_string())),
                }
            }
            Event::End(_) => {
                let element = stack
                    .pop()
                    .ok_or_else(|| XmlSyntaxError("an end tag without a start".to_string()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None if root.is_none() => root = Some(element),
                    None => return Err(XmlSyntaxError("more than one root element".to_string())),
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err(XmlSyntaxError(
            "the document ends inside an element".to_string(),
        ));
    }
    root.ok_or_else(|| XmlSyntaxError("the document has no element".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_style_attributes_parse() {
        let root =
            parse("<Manifest ><Set GUID = '{a}' Name = 'x&amp;y' ></Set><Empty/></Manifest>")
                .expect("xml");
        assert_eq!(root.name, "Manifest");
        assert_eq!(
            root.child("Set").and_then(|set| set.attribute("Name")),
            Some("x&y")
        );
        assert_eq!(root.children.len(), 2);
        assert!(parse("<a><b></a>").is_err());
        assert!(parse("not xml at all").is_err());
    }

    #[test]
    fn nesting_deeper_than_the_bound_is_an_error_not_a_stack_overflow() {
        let depth = 100_000;
        let text = format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
        let error = parse(&text).expect_err("too deep");
        assert!(error.0.contains("deeper than 64 levels"), "{error}");
        let fits = format!("{}{}", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        assert!(parse(&fits).is_ok());
    }

    #[test]
    fn more_elements_than_the_bound_is_an_error() {
        let text = format!("<a>{}</a>", "<b/>".repeat(MAX_ELEMENTS));
        let error = parse(&text).expect_err("too many");
        assert!(error.0.contains("more than 100000 elements"), "{error}");
    }
}
