//! Pure: what changed between two documents, as RFC 6902 or RFC 7396.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::keyed::{self, Place};

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

/// The RFC 6902 patch turning `old` into `new`, as JSON text (`[]` when they are equal), or
/// `None` once it would be longer than `max_bytes` or take longer than `max_time`.
///
/// Written here rather than with `json_patch::diff`, which clones the full pointer into every op:
/// 50,000 changed leaves under a 100 KB key made a 5 GB patch from a 200 KB document. Here the
/// text grows op by op and the diff gives up as soon as it passes the budget (the caller's
/// snapshot size), so memory stays within the budget plus one value, and time within a walk of
/// both documents (`max_time` bounds even that). Arrays keep their common prefix and suffix, so
/// an insertion or a removal costs one op, not a replace of every later element; an array that
/// `keys` names (pointer, `*` for any one segment → member) is matched by that member instead
/// (`keyed`), so a move is one op too and a changed element is patched inside.
pub fn json_patch(
    old: &Value,
    new: &Value,
    keys: &BTreeMap<String, String>,
    max_bytes: usize,
    max_time: Duration,
) -> Option<String> {
    let keys: Vec<(Vec<&str>, &str)> = keys
        .iter()
        .take(u64::BITS as usize)
        .map(|(p, m)| (p.split('/').skip(1).collect(), m.as_str()))
        .collect();
    let mut w = PatchWriter {
        out: b"[".to_vec(),
        pointer: String::new(),
        live: match keys.len() {
            0 => 0,
            n => u64::MAX >> (64 - n),
        },
        depth: 0,
        keys,
        budget: max_bytes,
        until: Instant::now().checked_add(max_time),
        steps: 0,
    };
    w.value(old, new).ok()?;
    w.out.push(b']');
    if w.out.len() > max_bytes {
        return None;
    }
    String::from_utf8(w.out).ok()
}

/// The patch grew past its budget.
struct OverBudget;

/// What an op carries besides its path.
enum Arg<'v> {
    None,
    Value(&'v Value),
    /// `move`'s source index, in the array the path's parent names.
    From(usize),
}

struct PatchWriter<'k> {
    out: Vec<u8>,
    /// The RFC 6901 pointer of the value being compared.
    pointer: String,
    /// `array_keys` as (segments, still escaped, `*` for any; member).
    keys: Vec<(Vec<&'k str>, &'k str)>,
    /// Bit i: `keys[i]` matches `pointer` so far, segment by segment (config allows 64 keys).
    live: u64,
    /// Segments in `pointer`: which segment of each pattern the next step down compares.
    depth: usize,
    budget: usize,
    until: Option<Instant>,
    /// Values compared so far; the clock is read every `CLOCK_EVERY`.
    steps: u64,
}

const CLOCK_EVERY: u64 = 1024;

impl<'k> PatchWriter<'k> {
    fn value(&mut self, old: &Value, new: &Value) -> Result<(), OverBudget> {
        self.tick(1)?;
        match (old, new) {
            (Value::Object(o), Value::Object(n)) => {
                for (key, nv) in n {
                    match o.get(key) {
                        Some(ov) => self.at_key(key, |w| w.value(ov, nv))?,
                        None => self.at_key(key, |w| w.op("add", Arg::Value(nv)))?,
                    }
                }
                for key in o.keys().filter(|k| !n.contains_key(*k)) {
                    self.at_key(key, |w| w.op("remove", Arg::None))?;
                }
                Ok(())
            }
            (Value::Array(o), Value::Array(n)) => match self.member() {
                Some(member) => self.keyed(o, n, member),
                None => self.array(o, n),
            },
            _ if old == new => Ok(()),
            _ => self.op("replace", Arg::Value(new)),
        }
    }

    /// Counts `work` values looked at, and gives up once past the deadline.
    fn tick(&mut self, work: usize) -> Result<(), OverBudget> {
        let before = self.steps / CLOCK_EVERY;
        self.steps = self.steps.saturating_add(work as u64);
        if self.steps / CLOCK_EVERY != before && self.until.is_some_and(|t| Instant::now() >= t) {
            return Err(OverBudget);
        }
        Ok(())
    }

    /// The member keying the array at `pointer`: of the patterns that match it, the one with
    /// the fewest `*` (the most specific).
    fn member(&self) -> Option<&'k str> {
        if self.live == 0 {
            return None;
        }
        self.keys
            .iter()
            .enumerate()
            .filter(|(i, (segs, _))| self.live & (1 << i) != 0 && segs.len() == self.depth)
            .min_by_key(|(_, (segs, _))| segs.iter().filter(|s| **s == "*").count())
            .map(|(_, (_, member))| *member)
    }

    /// An array matched by `member`: removals, then moves and additions in the new order, then
    /// each kept element patched inside at its final index. Without a key on every element, by
    /// index.
    fn keyed(&mut self, old: &[Value], new: &[Value], member: &str) -> Result<(), OverBudget> {
        let Some(mut lineup) = keyed::line_up(old, new, member) else {
            return self.array(old, new);
        };
        for &i in lineup.removed() {
            self.at_index(i, |w| w.op("remove", Arg::None))?;
        }
        while let Some(place) = lineup.next() {
            self.tick(lineup.take_work())?;
            match place {
                Place::Move { from, to } => self.at_index(to, |w| w.op("move", Arg::From(from)))?,
                Place::Add { at, new: j } => {
                    self.at_index(at, |w| w.op("add", Arg::Value(&new[j])))?
                }
            }
        }
        for (o, j) in lineup.kept() {
            self.at_index(j, |w| w.value(&old[o], &new[j]))?;
        }
        Ok(())
    }

    fn array(&mut self, old: &[Value], new: &[Value]) -> Result<(), OverBudget> {
        let prefix = old.iter().zip(new).take_while(|(a, b)| a == b).count();
        let (old, new) = (&old[prefix..], &new[prefix..]);
        let suffix = old
            .iter()
            .rev()
            .zip(new.iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        let (old, new) = (&old[..old.len() - suffix], &new[..new.len() - suffix]);
        let common = old.len().min(new.len());
        for (i, (ov, nv)) in old.iter().zip(new).enumerate() {
            self.at_index(prefix + i, |w| w.value(ov, nv))?;
        }
        // Each removal shifts the next extra element into the same index.
        for _ in common..old.len() {
            self.at_index(prefix + common, |w| w.op("remove", Arg::None))?;
        }
        for (i, nv) in new.iter().enumerate().skip(common) {
            self.at_index(prefix + i, |w| w.op("add", Arg::Value(nv)))?;
        }
        Ok(())
    }

    fn at_key(
        &mut self,
        key: &str,
        f: impl FnOnce(&mut Self) -> Result<(), OverBudget>,
    ) -> Result<(), OverBudget> {
        let len = self.pointer.len();
        self.pointer.push('/');
        for c in key.chars() {
            match c {
                '~' => self.pointer.push_str("~0"),
                '/' => self.pointer.push_str("~1"),
                c => self.pointer.push(c),
            }
        }
        self.within(len, f)
    }

    fn at_index(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Self) -> Result<(), OverBudget>,
    ) -> Result<(), OverBudget> {
        let len = self.pointer.len();
        self.pointer.push('/');
        self.pointer.push_str(&i.to_string());
        self.within(len, f)
    }

    /// Runs `f` one segment down (the one `pointer` holds past `len`), with the patterns that
    /// still match it, and climbs back.
    fn within(
        &mut self,
        len: usize,
        f: impl FnOnce(&mut Self) -> Result<(), OverBudget>,
    ) -> Result<(), OverBudget> {
        let (live, depth) = (self.live, self.depth);
        if live != 0 {
            let segment = &self.pointer[len + 1..];
            let mut next = 0;
            for (i, (segs, _)) in self.keys.iter().enumerate() {
                let hit = segs.get(depth).is_some_and(|s| *s == "*" || *s == segment);
                if live & (1 << i) != 0 && hit {
                    next |= 1 << i;
                }
            }
            self.live = next;
        }
        self.depth += 1;
        let r = f(self);
        self.pointer.truncate(len);
        (self.live, self.depth) = (live, depth);
        r
    }

    fn op(&mut self, op: &str, arg: Arg) -> Result<(), OverBudget> {
        if self.out.len() > 1 {
            self.out.push(b',');
        }
        self.out.extend_from_slice(b"{\"op\":\"");
        self.out.extend_from_slice(op.as_bytes());
        self.out.extend_from_slice(b"\",\"path\":");
        serde_json::to_writer(&mut self.out, &self.pointer).map_err(|_| OverBudget)?;
        match arg {
            Arg::None => {}
            Arg::Value(v) => {
                self.out.extend_from_slice(b",\"value\":");
                serde_json::to_writer(&mut self.out, v).map_err(|_| OverBudget)?;
            }
            Arg::From(i) => {
                // The source is a sibling of the path: its parent's pointer and another index.
                let parent = self.pointer.rfind('/').unwrap_or(0);
                self.out.extend_from_slice(b",\"from\":");
                let from = format!("{}/{i}", &self.pointer[..parent]);
                serde_json::to_writer(&mut self.out, &from).map_err(|_| OverBudget)?;
            }
        }
        self.out.push(b'}');
        // One byte more for the closing `]`.
        if self.out.len() + 1 > self.budget {
            return Err(OverBudget);
        }
        Ok(())
    }
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
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// No `array_keys`: every array diffed by index.
    fn none() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// A document as a client has it: through text, which serde_json's float parsing does not
    /// always round-trip exactly.
    pub(crate) fn wire(doc: &Value) -> Value {
        serde_json::from_str(&doc.to_string()).unwrap()
    }

    /// Applies a patch sent as text to the document a client has, as a client does.
    pub(crate) fn apply(doc: &Value, patch: &str) -> Value {
        let patch: json_patch::Patch = serde_json::from_str(patch).unwrap();
        let mut doc = wire(doc);
        json_patch::patch(&mut doc, &patch).unwrap();
        doc
    }

    /// Arbitrary JSON: nested objects and arrays, unicode, line breaks, `data:`, nulls.
    pub(crate) fn json_doc() -> impl Strategy<Value = Value> {
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
            let patch = json_patch(&old, &new, &none(), usize::MAX, Duration::MAX).unwrap();
            prop_assert_eq!(apply(&old, &patch), wire(&new));
        }

        #[test]
        fn a_json_patch_keeps_to_its_budget(old in json_doc(), new in json_doc(), budget in 0usize..400) {
            if let Some(patch) = json_patch(&old, &new, &none(), budget, Duration::MAX) {
                prop_assert!(patch.len() <= budget);
                prop_assert_eq!(apply(&old, &patch), wire(&new));
            }
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
            let patch = json_patch(&old, &new, &none(), usize::MAX, Duration::MAX).unwrap();
            assert_eq!(apply(&old, &patch), new, "{patch}");
        }
        // One op each, whatever the length: the common prefix and suffix stay.
        let old = json!((0..1000).collect::<Vec<_>>());
        let mut new = old.clone();
        new.as_array_mut().unwrap().insert(0, json!(-1));
        assert_eq!(
            json_patch(&old, &new, &none(), usize::MAX, Duration::MAX).unwrap(),
            r#"[{"op":"add","path":"/0","value":-1}]"#
        );
        let mut new = old.clone();
        new.as_array_mut().unwrap().remove(500);
        assert_eq!(
            json_patch(&old, &new, &none(), usize::MAX, Duration::MAX).unwrap(),
            r#"[{"op":"remove","path":"/500"}]"#
        );
    }

    #[test]
    fn a_diff_that_outgrows_its_budget_gives_up() {
        // F11: every op of json_patch::diff would carry the 100 KB key, 5 GB in all.
        let key = "k".repeat(100_000);
        let old = json!({ key.clone(): vec![0; 50_000] });
        let new = json!({ key: vec![1; 50_000] });
        let snapshot = new.to_string().len();
        assert_eq!(
            json_patch(&old, &new, &none(), snapshot, Duration::MAX),
            None
        );
        assert_eq!(
            json_patch(&json!([1]), &json!([2]), &none(), 10, Duration::MAX),
            None
        );
        assert_eq!(
            json_patch(
                &json!({"a/b~": 1}),
                &json!({"a/b~": 2}),
                &none(),
                100,
                Duration::MAX
            )
            .unwrap(),
            r#"[{"op":"replace","path":"/a~1b~0","value":2}]"#
        );
        // Out of time: a walk of 10,000 values reads the clock and stops.
        let many = json!((0..10_000).map(|i| json!([i])).collect::<Vec<_>>());
        let changed = json!((0..10_000).map(|i| json!([i + 1])).collect::<Vec<_>>());
        assert_eq!(
            json_patch(&many, &changed, &none(), usize::MAX, Duration::ZERO),
            None
        );
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
