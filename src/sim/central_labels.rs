//! The reference central's side of staff's label bindings: the
//! `label_bound`/`label_unbound` events a store pushes move the label
//! between the price book's items, so central's next book agrees with the
//! store (docs/sync-api.md, section 2).

use serde_json::{Value, json};

use super::central::{CentralState, Refusal};

impl CentralState {
    /// Take a batch for `store` ([`StoreView::accept`]), and apply the
    /// label bindings among its new events to the price book: staff's
    /// `label_bound`/`label_unbound` move the label between the items'
    /// `labels`, so the next book agrees with the store.
    pub fn accept_batch(
        &mut self,
        store: &str,
        events: &[Value],
        skipped: &[(i64, i64)],
        ack_at_most: Option<usize>,
        count_only: bool,
    ) -> Result<i64, Refusal> {
        let view = self.stores.entry(store.to_string()).or_default();
        let before = view.acked_through;
        let result = view.accept(events, skipped, ack_at_most, count_only);
        let acked = match &result {
            Ok(acked) | Err(Refusal::Conflict(acked)) => *acked,
            Err(Refusal::Bad(_)) => before,
        };
        for e in events {
            let seq = e.get("seq").and_then(Value::as_i64).unwrap_or(0);
            if seq > before && seq <= acked {
                self.apply_label_binding(e);
            }
        }
        result
    }

    /// One `label_bound` or `label_unbound` applied to the book: the label
    /// leaves every item that lists it and, when bound, joins its SKU's
    /// item. Every item that changed gets a new book version.
    pub(super) fn apply_label_binding(&mut self, event: &Value) {
        let kind = event.get("kind").and_then(Value::as_str);
        let data = event.get("data");
        let field = |name: &str| data.and_then(|d| d.get(name)).and_then(Value::as_str);
        let (Some(label), bound_to) = (field("label_id"), field("sku")) else {
            return;
        };
        let bound_to = match kind {
            Some("label_bound") => bound_to,
            Some("label_unbound") => None,
            _ => return,
        };
        let version = self.price_version + 1;
        let mut changed = false;
        for (sku, (v, item)) in self.prices.iter_mut() {
            let Some(labels) = item.get_mut("labels").and_then(Value::as_array_mut) else {
                if Some(sku.as_str()) == bound_to {
                    item["labels"] = json!([label]);
                    *v = version;
                    changed = true;
                }
                continue;
            };
            let had = labels.iter().any(|l| l == label);
            let wants = Some(sku.as_str()) == bound_to;
            if had && !wants {
                labels.retain(|l| l != label);
            } else if wants && !had {
                labels.push(json!(label));
            } else {
                continue;
            }
            *v = version;
            changed = true;
        }
        if changed {
            self.price_version = version;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::central::Central;

    fn event(seq: i64, kind: &str, data: Value) -> Value {
        json!({"seq": seq, "ts": "2026-12-01T08:00:00.000Z", "device": "api", "kind": kind, "data": data})
    }

    fn labels_of(s: &CentralState, sku: &str) -> (i64, Value) {
        let (v, item) = &s.prices[sku];
        (*v, item["labels"].clone())
    }

    #[test]
    fn pushed_label_bindings_move_the_label_in_the_book() {
        let c = Central::default();
        c.set_price(json!({"sku": "SKU-1001", "labels": ["0000021A4B3C0001"]}));
        c.set_price(json!({"sku": "SKU-2002"}));
        let mut s = c.lock();
        let bound = event(
            1,
            "label_bound",
            json!({"label_id": "0000021A4B3C0001", "sku": "SKU-2002"}),
        );
        assert_eq!(
            s.accept_batch("s", std::slice::from_ref(&bound), &[], None, false),
            Ok(1)
        );
        assert_eq!(s.price_version, 3);
        assert_eq!(labels_of(&s, "SKU-1001"), (3, json!([])));
        assert_eq!(labels_of(&s, "SKU-2002"), (3, json!(["0000021A4B3C0001"])));

        // A resent batch changes nothing.
        assert_eq!(s.accept_batch("s", &[bound], &[], None, false), Ok(1));
        assert_eq!(s.price_version, 3);

        let unbound = event(
            2,
            "label_unbound",
            json!({"label_id": "0000021A4B3C0001", "sku": "SKU-2002"}),
        );
        assert_eq!(s.accept_batch("s", &[unbound], &[], None, false), Ok(2));
        assert_eq!(labels_of(&s, "SKU-2002"), (4, json!([])));
        assert_eq!(labels_of(&s, "SKU-1001"), (3, json!([])));
    }
}
