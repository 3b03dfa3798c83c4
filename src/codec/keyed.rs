//! Pure: how the elements of an array named in `array_keys` line up between two documents,
//! matched by a member that identifies each one, so that a list which gains, loses or reorders
//! an element costs one op per element that did, not a replace of every later index.
//!
//! `diff` writes the ops; this file decides them. The plan is the minimal one for RFC 6902:
//! elements whose key left are removed, the longest run of kept elements already in order stays
//! put, and every other kept element is moved, and every new one added, right after the
//! element that precedes it in the new order.

use std::collections::HashMap;

use serde_json::{Number, Value};

/// What identifies an element: a string or a number member (`1` and `"1"` are different keys).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Key<'a> {
    Str(&'a str),
    Num(&'a Number),
}

fn key_of<'a>(v: &'a Value, member: &str) -> Option<Key<'a>> {
    match v.as_object()?.get(member)? {
        Value::String(s) => Some(Key::Str(s)),
        Value::Number(n) => Some(Key::Num(n)),
        _ => None,
    }
}

/// Each element's key and the index of each key, or `None` when an element has no usable key
/// or a key repeats: such an array is diffed by index instead.
fn index<'a>(items: &'a [Value], member: &str) -> Option<(Vec<Key<'a>>, HashMap<Key<'a>, usize>)> {
    let mut keys = Vec::with_capacity(items.len());
    let mut at = HashMap::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        let key = key_of(v, member)?;
        if at.insert(key, i).is_some() {
            return None;
        }
        keys.push(key);
    }
    Some((keys, at))
}

/// The plan for one keyed array.
pub(super) struct Lineup {
    /// Old indices of the elements whose key is gone, highest first, so each index still
    /// holds when its `remove` is applied.
    removed: Vec<usize>,
    /// For each new index, the old index of the element with its key, if there was one.
    from_old: Vec<Option<usize>>,
    /// The array as the ops so far leave it: each element as its new index.
    current: Vec<usize>,
    /// For each new index, whether the element stays where it is (one of the longest
    /// increasing run of kept elements).
    stable: Vec<bool>,
    /// The next new index to place, and where the element placed before it ends (the index an
    /// element placed right after it takes).
    next: usize,
    after: usize,
    /// Elements looked at since the writer last asked, so it can read the clock.
    work: usize,
}

/// One op of the plan, indices as RFC 6902 reads them when the op is applied.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Place {
    /// `move`: `to` is read after the element left `from`.
    Move { from: usize, to: usize },
    /// `add` the new element `new` at index `at`.
    Add { at: usize, new: usize },
}

/// The plan turning `old` into `new` by key, or `None` when either array has an element that is
/// not an object with a string or number `member`, or a key twice.
pub(super) fn line_up(old: &[Value], new: &[Value], member: &str) -> Option<Lineup> {
    let (old_keys, old_at) = index(old, member)?;
    let (new_keys, new_at) = index(new, member)?;
    let mut removed: Vec<usize> = (0..old.len())
        .filter(|i| !new_at.contains_key(&old_keys[*i]))
        .collect();
    removed.reverse();
    let current: Vec<usize> = old_keys
        .iter()
        .filter_map(|k| new_at.get(k).copied())
        .collect();
    let from_old = new_keys.iter().map(|k| old_at.get(k).copied()).collect();
    let mut stable = vec![false; new.len()];
    for j in longest_increasing(&current) {
        stable[j] = true;
    }
    Some(Lineup {
        removed,
        from_old,
        current,
        stable,
        next: 0,
        after: 0,
        work: old.len() + new.len(),
    })
}

/// The values of the longest strictly increasing subsequence of `seq` (patience sorting,
/// O(n log n)).
fn longest_increasing(seq: &[usize]) -> Vec<usize> {
    // tails[l]: the position in `seq` ending the best run of length l + 1 found so far.
    let mut tails: Vec<usize> = Vec::new();
    let mut before: Vec<Option<usize>> = vec![None; seq.len()];
    for (i, &v) in seq.iter().enumerate() {
        let l = tails.partition_point(|&t| seq[t] < v);
        before[i] = l.checked_sub(1).map(|p| tails[p]);
        if l == tails.len() {
            tails.push(i);
        } else {
            tails[l] = i;
        }
    }
    let mut run = Vec::with_capacity(tails.len());
    let mut at = tails.last().copied();
    while let Some(i) = at {
        run.push(seq[i]);
        at = before[i];
    }
    run
}

impl Lineup {
    pub(super) fn removed(&self) -> &[usize] {
        &self.removed
    }

    /// The pairs (old index, new index) of the elements kept, in new order: each is patched
    /// inside at its new index once every `Place` is applied.
    pub(super) fn kept(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.from_old
            .iter()
            .enumerate()
            .filter_map(|(j, o)| o.map(|o| (o, j)))
    }

    /// Elements looked at since the last call.
    pub(super) fn take_work(&mut self) -> usize {
        std::mem::take(&mut self.work)
    }

    /// Moves `j` from `from` to right after the element placed last; `None` when it is there
    /// already.
    fn move_to(&mut self, j: usize, from: usize) -> Option<Place> {
        if from == self.after {
            self.after += 1;
            return None;
        }
        self.current.remove(from);
        // Its removal shifts the element before the gap down by one.
        let to = if from < self.after {
            self.after - 1
        } else {
            self.after
        };
        self.current.insert(to, j);
        self.after = to + 1;
        Some(Place::Move { from, to })
    }
}

impl Iterator for Lineup {
    type Item = Place;

    /// The next `move` or `add`, walking the new order after the removals. Each element ends
    /// right after the one before it in the new order, and an element that stays is already
    /// after every element placed so far, so the walk ends with the new order.
    fn next(&mut self) -> Option<Place> {
        while self.next < self.from_old.len() {
            let j = self.next;
            self.next += 1;
            if self.from_old[j].is_none() {
                let at = self.after;
                self.current.insert(at, j);
                self.after += 1;
                self.work += 1;
                return Some(Place::Add { at, new: j });
            }
            if self.stable[j] {
                if let Some(i) = self.current[self.after..].iter().position(|&x| x == j) {
                    self.work += i + 1;
                    self.after += i + 1;
                    continue;
                }
            }
            let from = self.current.iter().position(|&x| x == j)?;
            self.work += self.current.len();
            if let Some(place) = self.move_to(j, from) {
                return Some(place);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan(old: Value, new: Value) -> Option<(Vec<usize>, Vec<Place>)> {
        let (Value::Array(old), Value::Array(new)) = (old, new) else {
            unreachable!("arrays")
        };
        let mut l = line_up(&old, &new, "id")?;
        let removed = l.removed().to_vec();
        Some((removed, l.by_ref().collect()))
    }

    fn ids(ids: &[i32]) -> Value {
        json!(ids.iter().map(|i| json!({"id": i})).collect::<Vec<_>>())
    }

    #[test]
    fn the_longest_run_in_order_stays() {
        assert_eq!(longest_increasing(&[3, 0, 1, 4, 2]), vec![2, 1, 0]);
        assert_eq!(longest_increasing(&[]), Vec::<usize>::new());
    }

    #[test]
    fn each_element_that_moved_costs_one_op() {
        let (removed, places) = plan(ids(&[1, 2, 3, 4]), ids(&[4, 1, 2, 3])).unwrap();
        assert!(removed.is_empty());
        assert_eq!(places, vec![Place::Move { from: 3, to: 0 }]);
        let (_, places) = plan(ids(&[1, 2, 3, 4]), ids(&[2, 3, 4, 1])).unwrap();
        assert_eq!(places, vec![Place::Move { from: 0, to: 3 }]);
        let (removed, places) = plan(ids(&[1, 2, 3]), ids(&[0, 1, 3])).unwrap();
        assert_eq!(removed, vec![1]);
        assert_eq!(places, vec![Place::Add { at: 0, new: 0 }]);
    }

    #[test]
    fn a_missing_or_repeated_key_is_no_plan() {
        assert!(plan(json!([{"id": 1}, {"x": 2}]), ids(&[1])).is_none());
        assert!(plan(ids(&[1]), json!([{"id": 1}, {"id": 1}])).is_none());
        assert!(plan(ids(&[1]), json!([{"id": 1}, 2])).is_none());
        assert!(plan(ids(&[1]), json!([{"id": [1]}])).is_none());
        assert!(plan(json!([{"id": "1"}]), ids(&[1])).is_some());
    }
}
