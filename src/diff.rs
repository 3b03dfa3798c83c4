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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Arbitrary JSON: nested objects and arrays, unicode, line breaks, `data:`, nulls.
    fn json_doc() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            (-1e6f64..1e6).prop_map(|f| json!(f)),
            "(\\PC|\n|\r|data: ){0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-c/~]{1,3}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn a_json_patch_turns_old_into_new(old in json_doc(), new in json_doc()) {
            let mut doc = old.clone();
            json_patch::patch(&mut doc, &json_patch(&old, &new)).unwrap();
            prop_assert_eq!(doc, new);
        }

        #[test]
        fn a_merge_patch_when_given_turns_old_into_new(old in json_doc(), new in json_doc()) {
            if let Some(p) = merge_patch(&old, &new) {
                let mut doc = old.clone();
                json_patch::merge(&mut doc, &p);
                prop_assert_eq!(doc, new);
            }
        }

        #[test]
        fn strip_removes_exactly_what_it_points_at(doc in json_doc()) {
            let ignore = vec!["/a".to_string(), "/~1c".to_string(), "/b/0".to_string()];
            let mut stripped = doc.clone();
            strip(&mut stripped, &ignore);
            if let (Value::Object(before), Value::Object(after)) = (&doc, &stripped) {
                prop_assert!(!after.contains_key("a") && !after.contains_key("/c"));
                for (k, v) in after {
                    if k != "b" {
                        prop_assert_eq!(Some(v), before.get(k));
                    }
                }
                if let (Some(Value::Array(b0)), Some(Value::Array(b1))) = (before.get("b"), after.get("b")) {
                    prop_assert_eq!(&b0[b0.len().min(1)..], &b1[..]);
                }
            } else {
                prop_assert_eq!(stripped, doc);
            }
        }
    }

    #[test]
    fn a_null_to_set_makes_merge_patch_give_way_to_a_snapshot() {
        assert_eq!(merge_patch(&json!({"a": 1}), &json!({"a": null})), None);
        assert_eq!(merge_patch(&json!({}), &json!({"a": {"b": null}})), None);
        assert_eq!(
            merge_patch(&json!({"a": 1, "b": 2}), &json!({"a": 1})),
            Some(json!({"b": null}))
        );
        assert_eq!(
            merge_patch(&json!({"a": [1]}), &json!({"a": [null]})),
            Some(json!({"a": [null]}))
        );
    }

    #[test]
    fn arrays_that_grow_shrink_and_reorder_patch_exactly() {
        for (old, new) in [
            (json!([1, 2, 3]), json!([1, 2, 3, 4, 5])),
            (json!([1, 2, 3]), json!([3])),
            (json!(["a", "b", "c"]), json!(["c", "a", "b"])),
            (
                json!({"x": [{"id": 1}, {"id": 2}]}),
                json!({"x": [{"id": 2}, {"id": 1, "new": "ü"}]}),
            ),
        ] {
            let mut doc = old.clone();
            json_patch::patch(&mut doc, &json_patch(&old, &new)).unwrap();
            assert_eq!(doc, new);
        }
    }

    #[test]
    fn strip_understands_escapes_and_array_indices() {
        let mut doc = json!({"a/b": 1, "t~": 2, "list": [0, 1, 2], "keep": true});
        strip(
            &mut doc,
            &[
                "/a~1b".into(),
                "/t~0".into(),
                "/list/1".into(),
                "/missing/x".into(),
            ],
        );
        assert_eq!(doc, json!({"list": [0, 2], "keep": true}));
    }
}
