//! Small helpers that make `minidom` pleasant for stanza code: attribute set and
//! remove by `&str`, a builder, and serialisation into a byte buffer.

use minidom::Element;
use rxml::{Namespace, NcName};

/// Set (or replace) an unnamespaced attribute. Names are compile-time constants in
/// this crate; an invalid name is a programming error and is ignored in release.
pub fn attr_set(el: &mut Element, name: &str, value: impl Into<String>) {
    match NcName::try_from(name) {
        Ok(n) => {
            el.attrs_mut().insert(Namespace::NONE, n, value.into());
        }
        Err(_) => debug_assert!(false, "invalid attribute name {name}"),
    }
}

/// Remove an unnamespaced attribute if present.
pub fn attr_remove(el: &mut Element, name: &str) {
    el.attrs_mut().remove(&Namespace::NONE, name);
}

/// Start building an element `name` in namespace `ns`.
pub fn el(name: &str, ns: &str) -> ElBuilder {
    ElBuilder(Element::bare(name, ns))
}

/// A builder with `&str` attribute names.
pub struct ElBuilder(Element);

impl ElBuilder {
    /// Add an attribute.
    pub fn attr(mut self, name: &str, value: impl Into<String>) -> Self {
        attr_set(&mut self.0, name, value);
        self
    }
    /// Add an attribute if `value` is `Some`.
    pub fn attr_opt(self, name: &str, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(v) => self.attr(name, v),
            None => self,
        }
    }
    /// Append a child element.
    pub fn child(mut self, child: Element) -> Self {
        self.0.append_child(child);
        self
    }
    /// Append several child elements.
    pub fn children(mut self, children: impl IntoIterator<Item = Element>) -> Self {
        for c in children {
            self.0.append_child(c);
        }
        self
    }
    /// Append text.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.0.append_text(text);
        self
    }
    /// Finish.
    pub fn build(self) -> Element {
        self.0
    }
}

/// An empty element in the given namespace: handy for error conditions.
pub fn error_condition_ns(name: &str, ns: &str) -> Element {
    Element::bare(name, ns)
}

/// Serialise `el` and append the bytes to `out`.
pub fn serialize(el: &Element, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail for I/O reasons; minidom only fails on
    // invalid names, which the parser and builders never produce.
    if let Err(e) = el.write_to(out) {
        tracing::error!(error = %e, "could not serialise an element");
    }
}

/// About how many bytes `el` takes on the wire (names, attributes, text),
/// counted without serialising it: a stanza's weight for rate limits.
pub fn approx_len(el: &Element) -> usize {
    let mut n = 2 * el.name().len() + 5;
    for ((_, name), value) in el.attrs().iter() {
        n += name.as_str().len() + value.len() + 4;
    }
    for node in el.nodes() {
        n += match node {
            minidom::Node::Element(child) => approx_len(child),
            minidom::Node::Text(text) => text.len(),
        };
    }
    n
}
