//! `array_keys` through the whole diff: the ops a keyed array costs, what falls back to the
//! diff by index, and the laws (a keyed patch rebuilds the new document, keeps to its budget,
//! and costs at most one op per element inserted, removed or moved).

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::diff::json_patch;
use super::diff::tests::{apply, json_doc, wire};

fn keys(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(p, m)| (p.to_string(), m.to_string()))
        .collect()
}

fn patch(old: &Value, new: &Value, k: &BTreeMap<String, String>) -> String {
    let p = json_patch(old, new, k, usize::MAX, Duration::MAX).unwrap();
    assert_eq!(apply(old, &p), wire(new), "{p}");
    p
}

fn ops(patch: &str) -> Vec<Value> {
    serde_json::from_str(patch).unwrap()
}

/// 500 orders, as an order list endpoint returns them.
fn orders(ids: impl Iterator<Item = u32>) -> Vec<Value> {
    ids.map(
        |i| json!({"id": i, "customer": format!("c{}", i % 37), "total": i * 3, "status": "open"}),
    )
    .collect()
}

#[test]
fn an_order_on_top_is_one_add() {
    let old = json!({"items": orders(1..=500)});
    let mut new = old.clone();
    let top = json!({"id": 501, "customer": "c9", "total": 7, "status": "new"});
    new["items"].as_array_mut().unwrap().insert(0, top.clone());
    let k = keys(&[("/items", "id")]);
    assert_eq!(
        ops(&patch(&old, &new, &k)),
        vec![json!({"op": "add", "path": "/items/0", "value": top})]
    );
    // By index it is the same: the common suffix stays.
    assert_eq!(ops(&patch(&old, &new, &keys(&[]))).len(), 1);
}

#[test]
fn a_removal_is_one_remove_and_a_move_one_move() {
    let old = json!({"items": orders(1..=500)});
    let k = keys(&[("/items", "id")]);
    let mut new = old.clone();
    new["items"].as_array_mut().unwrap().remove(250);
    assert_eq!(
        ops(&patch(&old, &new, &k)),
        vec![json!({"op": "remove", "path": "/items/250"})]
    );
    let mut new = old.clone();
    let last = new["items"].as_array_mut().unwrap().pop().unwrap();
    new["items"].as_array_mut().unwrap().insert(0, last);
    assert_eq!(
        ops(&patch(&old, &new, &k)),
        vec![json!({"op": "move", "from": "/items/499", "path": "/items/0"})]
    );
    // By index, every element shifted: a replace inside each of the 500.
    assert!(ops(&patch(&old, &new, &keys(&[]))).len() >= 500);
}

#[test]
fn a_changed_element_is_patched_inside_at_its_final_index() {
    let old = json!({"items": orders(1..=5)});
    let mut new = json!({"items": orders([9, 1, 2, 4, 5].into_iter())});
    new["items"][3]["status"] = json!("shipped");
    assert_eq!(
        ops(&patch(&old, &new, &keys(&[("/items", "id")]))),
        vec![
            json!({"op": "remove", "path": "/items/2"}),
            json!({"op": "add", "path": "/items/0", "value": new["items"][0]}),
            json!({"op": "replace", "path": "/items/3/status", "value": "shipped"}),
        ]
    );
}

#[test]
fn an_array_without_a_key_on_each_element_is_diffed_by_index() {
    let k = keys(&[("/items", "id")]);
    for (old, new) in [
        (
            json!({"items": [{"id": 1}, {"id": 2}]}),
            json!({"items": [{"id": 2}, {"x": 1}]}),
        ),
        (
            json!({"items": [{"id": 1}, {"id": 1}]}),
            json!({"items": [{"id": 2}, {"id": 1}]}),
        ),
        (
            json!({"items": [{"id": 1}, 7]}),
            json!({"items": [7, {"id": 1}]}),
        ),
        (
            json!({"items": [{"id": null}]}),
            json!({"items": [{"id": 2}, {"id": null}]}),
        ),
        (json!({"items": [{"id": 1}]}), json!({"items": {"id": 1}})),
    ] {
        assert_eq!(patch(&old, &new, &k), patch(&old, &new, &keys(&[])));
    }
}

#[test]
fn a_star_matches_any_member_or_index_and_exact_segments_win() {
    let old = json!({"orders": [
        {"n": 1, "lines": [{"sku": "a"}, {"sku": "b", "q": 1}]},
        {"n": 2, "lines": [{"sku": "c"}]},
    ], "by_team": {"red": [{"id": "x"}, {"id": "y"}]}});
    let mut new = old.clone();
    new["orders"][0]["lines"] = json!([{"sku": "b", "q": 2}, {"sku": "a"}]);
    new["by_team"]["red"] = json!([{"id": "y"}, {"id": "x"}]);
    let k = keys(&[("/orders/*/lines", "sku"), ("/*/*", "id")]);
    assert_eq!(
        ops(&patch(&old, &new, &k)),
        vec![
            json!({"op": "move", "from": "/orders/0/lines/0", "path": "/orders/0/lines/1"}),
            json!({"op": "replace", "path": "/orders/0/lines/0/q", "value": 2}),
            json!({"op": "move", "from": "/by_team/red/0", "path": "/by_team/red/1"}),
        ]
    );
    // `/orders/*/lines` is more specific than `/*/*/*` for the lines.
    let k = keys(&[("/orders/*/lines", "sku"), ("/*/*/*", "nothing")]);
    assert_eq!(ops(&patch(&old, &new, &k))[0]["op"], "move");
}

#[test]
fn a_pointer_is_matched_escaped() {
    let old = json!({"a/b": [{"id": 1}, {"id": 2}], "t~": [{"id": 1}, {"id": 2}]});
    let new = json!({"a/b": [{"id": 2}, {"id": 1}], "t~": [{"id": 2}, {"id": 1}]});
    let k = keys(&[("/a~1b", "id"), ("/t~0", "id")]);
    assert_eq!(
        ops(&patch(&old, &new, &k)),
        vec![
            json!({"op": "move", "from": "/a~1b/0", "path": "/a~1b/1"}),
            json!({"op": "move", "from": "/t~0/0", "path": "/t~0/1"}),
        ]
    );
}

#[test]
fn a_keyed_array_keeps_to_the_budget_and_the_clock() {
    let old = json!({"items": orders(0..10_000)});
    let new = json!({"items": orders((0..10_000).rev())});
    let k = keys(&[("/items", "id")]);
    // Reversed: 9,999 moves, far more than the snapshot.
    let snapshot = new.to_string().len();
    assert_eq!(
        json_patch(&old, &new, &k, snapshot / 10, Duration::MAX),
        None
    );
    assert_eq!(json_patch(&old, &new, &k, usize::MAX, Duration::ZERO), None);
}

/// One structural edit of a keyed list, by seeds an index is taken modulo the length from.
#[derive(Clone, Debug)]
enum Edit {
    Insert(usize, Value),
    Remove(usize),
    Move(usize, usize),
    Change(usize, Value),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), json_doc()).prop_map(|(i, v)| Edit::Insert(i, v)),
        any::<usize>().prop_map(Edit::Remove),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::Move(a, b)),
        (any::<usize>(), json_doc()).prop_map(|(i, v)| Edit::Change(i, v)),
    ]
}

/// A list of objects keyed by `id` (numbers and strings), and the same list after `edits`.
/// Also how many of the edits moved elements about (all but changes).
fn keyed_list(member: &'static str) -> impl Strategy<Value = (Value, Value, usize)> {
    let list = prop::collection::vec(json_doc(), 0..10);
    (list, prop::collection::vec(edit(), 0..6)).prop_map(move |(payloads, edits)| {
        let key = |i: usize| {
            if i.is_multiple_of(2) {
                json!(i)
            } else {
                json!(format!("{i}"))
            }
        };
        let item = |i: usize, v: Value| json!({member: key(i), "v": v});
        let old: Vec<Value> = payloads
            .into_iter()
            .enumerate()
            .map(|(i, v)| item(i, v))
            .collect();
        let mut new = old.clone();
        let mut structural = 0;
        for (n, e) in edits.into_iter().enumerate() {
            let len = new.len();
            let structural_edit = !matches!(e, Edit::Change(..));
            match e {
                Edit::Insert(i, v) => new.insert(i % (len + 1), item(100 + n, v)),
                Edit::Remove(i) if len > 0 => drop(new.remove(i % len)),
                Edit::Move(a, b) if len > 0 => {
                    let x = new.remove(a % len);
                    new.insert(b % len, x);
                }
                Edit::Change(i, v) if len > 0 => new[i % len]["v"] = v,
                _ => continue,
            }
            structural += usize::from(structural_edit);
        }
        (Value::Array(old), Value::Array(new), structural)
    })
}

/// Two documents with keyed lists at `/items` and `/orders/*/lines`, and anything else.
fn keyed_docs() -> impl Strategy<Value = (Value, Value)> {
    (
        keyed_list("id"),
        keyed_list("sku"),
        keyed_list("sku"),
        json_doc(),
        json_doc(),
    )
        .prop_map(|((a0, a1, _), (b0, b1, _), (c0, c1, _), x0, x1)| {
            let doc = |items, l1, l2, x| {
                json!({"items": items, "orders": [{"lines": l1}, {"lines": l2}], "x": x})
            };
            (doc(a0, b0, c0, x0), doc(a1, b1, c1, x1))
        })
}

fn the_keys() -> BTreeMap<String, String> {
    keys(&[("/items", "id"), ("/orders/*/lines", "sku")])
}

proptest! {
    #[test]
    fn a_keyed_patch_turns_old_into_new((old, new) in keyed_docs()) {
        let p = json_patch(&old, &new, &the_keys(), usize::MAX, Duration::MAX).unwrap();
        prop_assert_eq!(apply(&old, &p), wire(&new));
    }

    #[test]
    fn a_keyed_patch_keeps_to_its_budget((old, new) in keyed_docs(), budget in 0usize..2000) {
        if let Some(p) = json_patch(&old, &new, &the_keys(), budget, Duration::MAX) {
            prop_assert!(p.len() <= budget);
            prop_assert_eq!(apply(&old, &p), wire(&new));
        }
    }

    #[test]
    fn each_insert_removal_or_move_costs_at_most_one_op((old, new, edits) in keyed_list("id")) {
        // Changes left out: a payload changed is patched inside, at any number of ops.
        let strip = |v: &Value| json!(v.as_array().unwrap().iter().map(|e| json!({"id": e["id"]})).collect::<Vec<_>>());
        let (old, new) = (strip(&old), strip(&new));
        let k = keys(&[("", "id")]);
        let p = json_patch(&old, &new, &k, usize::MAX, Duration::MAX).unwrap();
        prop_assert_eq!(apply(&old, &p), wire(&new));
        prop_assert!(ops(&p).len() <= edits, "{} ops for {} edits: {}", ops(&p).len(), edits, p);
    }
}
