//! Pure: what changed between two documents, as RFC 6902 or RFC 7396.

use serde_json::{Map, Value};

/// Removes each RFC 6901 pointer from the document (missing ones are fine), so ignored fields
/// neither trigger events nor appear in them.
pub fn strip(doc: &mut Value, ignore: &[String]) {
    for pointer in ignore {
        let Some((parent, last)) = pointer.rsplit_once('/') else {
            continue;
        };
        let key = last.replace("~1", "/").replace("~0", "~");
        match doc.pointer_mut(parent) {
            Some(Value::Object(map)) => {
                map.shift_remove(&key);
            }
            Some(Value::Array(items)) => {
                if let Ok(i) = key.parse::<usize>() {
                    if i < items.len() {
                        items.remove(i);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The RFC 6902 patch turning `old` into `new`; empty when they are equal.
pub fn json_patch(old: &Value, new: &Value) -> json_patch::Patch {
    json_patch::diff(old, new)
}

/// The RFC 7396 merge patch turning `old` into `new`, or `None` when RFC 7396 cannot express
/// the change: a `null` that must be set (in a merge patch `null` means "remove").
pub fn merge_patch(old: &Value, new: &Value) -> Option<Value> {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = Map::new();
            for (k, ov) in o {
                if !n.contains_key(k) {
                    patch.insert(k.clone(), Value::Null);
                } else if let Some(nv) = n.get(k) {
                    if nv != ov {
                        patch.insert(k.clone(), merge_patch(ov, nv)?);
                    }
                }
            }
            for (k, nv) in n {
                if !o.contains_key(k) {
                    patch.insert(k.clone(), whole(nv)?);
                }
            }
            Some(Value::Object(patch))
        }
        _ => whole(new),
    }
}

/// A value set whole by a merge patch: objects inside it are merged into nothing, so a `null`
/// anywhere in an object would be dropped rather than set.
fn whole(v: &Value) -> Option<Value> {
    fn has_null_member(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.values().any(|x| x.is_null() || has_null_member(x)),
            Value::Array(a) => a.iter().any(has_null_member),
            _ => false,
        }
    }
    (!v.is_null() && !has_null_member(v)).then(|| v.clone())
}
