//! The fast way through an RFID message: parse it once, keeping only the
//! values at the paths the profile reads, instead of building the whole
//! message as a `serde_json::Value` (a map, a key and often a string per
//! field, most of them never looked at). On a reader's tag stream that
//! tree was most of the agent's work per read.
//!
//! Everything else is parsed by serde_json's own string, number and
//! nesting rules without being kept, so a message this path accepts is
//! exactly a message `serde_json::from_str::<Value>` accepts; the codec
//! falls back to the full parse for anything unusual (see
//! `JsonCodec::decode_extracted`), and a differential property test holds
//! the two paths to the same output.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::path::{Path, Record, step};

/// The `visit_*` methods of a visitor for every JSON scalar (boolean,
/// number, string, null), each giving `$value`: the value has already been
/// parsed by serde_json's rules when the visitor sees it.
macro_rules! scalars_are {
    ($value:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

/// The record-level paths a codec reads, as a tree of keys. Each path ends
/// at a node with a slot, the index of its value in an [`Extracted`]
/// record.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct PathTree {
    slot: Option<usize>,
    children: Vec<(String, PathTree)>,
    slots: usize,
}

impl PathTree {
    /// Add `path` and write its slot into it; equal paths share a slot.
    pub(super) fn insert(&mut self, path: &mut Path) {
        let next = self.slots;
        let mut node = &mut *self;
        for segment in &path.segments {
            let at = match node.children.iter().position(|(k, _)| k == segment) {
                Some(at) => at,
                None => {
                    node.children.push((segment.clone(), PathTree::default()));
                    node.children.len() - 1
                }
            };
            node = &mut node.children[at].1;
        }
        let slot = *node.slot.get_or_insert(next);
        if slot == next {
            self.slots += 1;
        }
        path.slot = slot;
    }

    fn child(&self, key: &str) -> Option<&PathTree> {
        self.children
            .iter()
            .find_map(|(k, child)| (k == key).then_some(child))
    }

    /// Forget what a repeated key's earlier value left in this subtree: as
    /// in a parsed `Value`, the last occurrence of a key is the one seen.
    fn clear(&self, slots: &mut [Option<Value>]) {
        if let Some(slot) = self.slot {
            slots[slot] = None;
        }
        for (_, child) in &self.children {
            child.clear(slots);
        }
    }

    /// Fill this subtree's slots from an already parsed value, the way
    /// `Path::lookup` walks it.
    fn fill(&self, value: &Value, slots: &mut [Option<Value>]) {
        if let Some(slot) = self.slot {
            slots[slot] = Some(value.clone());
        }
        for (key, child) in &self.children {
            if let Some(found) = step(value, key) {
                child.fill(found, slots);
            }
        }
    }
}

/// One record: the values found at the codec's paths.
#[derive(Debug)]
pub(super) struct Extracted {
    slots: Vec<Option<Value>>,
}

impl Record for Extracted {
    fn at(&self, path: &Path) -> Option<&Value> {
        self.slots.get(path.slot)?.as_ref()
    }
}

/// The records of a message whose records are the message itself (`"$"`):
/// one object, or an array of objects. `None` when the message is not
/// JSON, or is or holds something other than an object: the full parse
/// then says precisely what is wrong.
pub(super) fn records(text: &str, tree: &PathTree) -> Option<Vec<Extracted>> {
    let mut de = serde_json::Deserializer::from_str(text);
    let records = de.deserialize_any(Message { tree }).ok()??;
    de.end().ok()?;
    Some(records)
}

/// The whole message: `Some(records)`, or `None` if it is not made of
/// objects.
struct Message<'t> {
    tree: &'t PathTree,
}

impl<'de> Visitor<'de> for Message<'_> {
    type Value = Option<Vec<Extracted>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object or array of objects")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok(Some(vec![record(self.tree, map)?]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut records = Vec::new();
        let mut all_objects = true;
        while let Some(found) = seq.next_element_seed(Element { tree: self.tree })? {
            match found {
                Some(r) => records.push(r),
                None => all_objects = false,
            }
        }
        Ok(all_objects.then_some(records))
    }

    // Any other message is not a record: `deserialize_any` has parsed it
    // already, and `records` reports `None` for it.
    scalars_are!(None);
}

/// One element of an array message: `Some(record)` for an object.
struct Element<'t> {
    tree: &'t PathTree,
}

impl<'de> DeserializeSeed<'de> for Element<'_> {
    type Value = Option<Extracted>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Element<'_> {
    type Value = Option<Extracted>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok(Some(record(self.tree, map)?))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Skip.visit_seq(seq).map(|()| None)
    }
    scalars_are!(None);
}

fn record<'de, A: MapAccess<'de>>(tree: &PathTree, map: A) -> Result<Extracted, A::Error> {
    let mut slots = vec![None; tree.slots];
    Node {
        tree,
        slots: &mut slots,
    }
    .visit_map(map)?;
    Ok(Extracted { slots })
}

/// The value at a node of the tree: kept whole where a path ends, walked
/// into where paths go deeper, parsed and dropped everywhere else.
struct Node<'t, 's> {
    tree: &'t PathTree,
    slots: &'s mut [Option<Value>],
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.tree.slot {
            // A path ends here: keep the value.
            Some(slot) if self.tree.children.is_empty() => {
                self.slots[slot] = Some(Value::deserialize(d)?);
                Ok(())
            }
            // A path ends here and others go on below: keep the value and
            // look the deeper paths up in it.
            Some(_) => {
                let value = Value::deserialize(d)?;
                self.tree.fill(&value, self.slots);
                Ok(())
            }
            None => d.deserialize_any(self),
        }
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(child) = map.next_key_seed(Key { tree: self.tree })? {
            match child {
                Some(child) => {
                    child.clear(self.slots);
                    map.next_value_seed(Node {
                        tree: child,
                        slots: &mut *self.slots,
                    })?;
                }
                None => map.next_value_seed(Skip)?,
            }
        }
        Ok(())
    }

    /// Paths index arrays with numeric segments ("1", also "01"); such an
    /// element is parsed whole and the paths are looked up in it.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            let wanted = self
                .tree
                .children
                .iter()
                .any(|(k, _)| k.parse::<usize>() == Ok(index));
            if wanted {
                let Some(element) = seq.next_element::<Value>()? else {
                    return Ok(());
                };
                for (key, child) in &self.tree.children {
                    if key.parse::<usize>() == Ok(index) {
                        child.clear(self.slots);
                        child.fill(&element, self.slots);
                    }
                }
            } else if seq.next_element_seed(Skip)?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    scalars_are!(());
}

/// An object key: the child of the tree it leads to, if any. Parsed by
/// serde_json's string rules, borrowed when it has no escapes.
struct Key<'t> {
    tree: &'t PathTree,
}

impl<'de, 't> DeserializeSeed<'de> for Key<'t> {
    type Value = Option<&'t PathTree>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 't> Visitor<'de> for Key<'t> {
    type Value = Option<&'t PathTree>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.tree.child(key))
    }
}

/// A value nobody reads: parsed with the same rules as a `Value` (strings
/// with their escapes, numbers, nesting depth), so that it is refused
/// exactly when the full parse refuses it, but not kept.
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Skip)?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }

    scalars_are!(());
}
