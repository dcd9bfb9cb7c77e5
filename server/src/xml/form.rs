//! Data forms (XEP-0004) as stanza code needs them: read the fields of a
//! submitted form, and build fields for a form to send.

use minidom::Element;

use super::{el, ElBuilder};

/// The data forms namespace.
pub const NS_DATA: &str = "jabber:x:data";

/// The `<value/>` texts of a `<field/>`.
pub fn values(field: &Element) -> Vec<String> {
    field
        .children()
        .filter(|c| c.is("value", NS_DATA))
        .map(|c| c.text())
        .collect()
}

/// The fields of a form, `(var, values)` in document order (fields without
/// a `var` are skipped).
pub fn fields(x: &Element) -> Vec<(String, Vec<String>)> {
    x.children()
        .filter(|c| c.is("field", NS_DATA))
        .filter_map(|f| Some((f.attr("var")?.to_string(), values(f))))
        .collect()
}

/// The form's `FORM_TYPE`, if it has one.
pub fn form_type(x: &Element) -> Option<String> {
    fields(x)
        .into_iter()
        .find(|(var, _)| var == "FORM_TYPE")
        .and_then(|(_, v)| v.into_iter().next())
}

/// A boolean field value (`1`/`true`/`0`/`false`); `None` if it is neither.
pub fn boolean(v: &str) -> Option<bool> {
    match v {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// A `<field/>` with a type, an optional label and its values.
pub fn field(var: &str, ty: Option<&str>, label: Option<&str>, values: &[&str]) -> ElBuilder {
    let mut f = el("field", NS_DATA)
        .attr("var", var)
        .attr_opt("type", ty)
        .attr_opt("label", label);
    for v in values {
        f = f.child(el("value", NS_DATA).text(*v).build());
    }
    f
}

/// A list field's `<option/>`.
pub fn option(label: &str, value: &str) -> Element {
    el("option", NS_DATA)
        .attr("label", label)
        .child(el("value", NS_DATA).text(value).build())
        .build()
}

/// The hidden `FORM_TYPE` field.
pub fn form_type_field(ty: &str) -> Element {
    field("FORM_TYPE", Some("hidden"), None, &[ty]).build()
}
