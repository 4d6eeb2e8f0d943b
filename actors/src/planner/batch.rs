//! Which due messages one planning pass takes: a pure decision over the messages in queue
//! order (priority, then age), tested by a table below.
//!
//! A pass is one transaction, so its size is bounded twice: listed audiences (user ids,
//! direct addresses) are planned whole while their deliveries fit in `targets`, and paged
//! audiences (tags, segments, broadcasts) get one page each, for at most `pages` of them.
//! The two budgets are separate, so a broadcast being planned page by page never stops the
//! small messages behind it, and a stream of small messages never stops a broadcast's
//! pages. Within each kind the queue order holds: a listed message that does not fit ends
//! the listed part of the pass (nothing younger or of lower priority overtakes it), and
//! paged messages take their pages in order.

/// What a due message asks of a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// User ids or direct addresses, planned whole: this many deliveries.
    Listed { deliveries: usize },
    /// Tags, a segment or a broadcast: one page per pass.
    Paged,
    /// A stored request that no longer parses: removed from the queue, nothing planned.
    Unreadable,
}

/// How much one pass plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deliveries of listed audiences per pass (the first listed message is taken even if
    /// it alone is larger).
    pub deliveries: usize,
    /// Paged messages per pass, one page each.
    pub pages: usize,
}

/// The indexes of the messages this pass plans, in queue order.
pub fn pick(shapes: &[Shape], limits: Limits) -> Vec<usize> {
    let mut out = Vec::new();
    let mut deliveries = 0usize;
    let mut listed_closed = false;
    let mut listed_taken = false;
    let mut pages = 0usize;
    for (i, shape) in shapes.iter().enumerate() {
        match *shape {
            Shape::Unreadable => out.push(i),
            Shape::Paged => {
                if pages < limits.pages {
                    pages += 1;
                    out.push(i);
                }
            }
            Shape::Listed { deliveries: n } => {
                if listed_closed {
                    continue;
                }
                if listed_taken && deliveries + n > limits.deliveries {
                    listed_closed = true;
                    continue;
                }
                listed_taken = true;
                deliveries += n;
                out.push(i);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: fn(usize) -> Shape = |n| Shape::Listed { deliveries: n };
    const P: Shape = Shape::Paged;
    const U: Shape = Shape::Unreadable;

    #[test]
    fn a_pass_takes_what_the_table_says() {
        let limits = Limits {
            deliveries: 10,
            pages: 2,
        };
        let table: &[(&str, Vec<Shape>, Vec<usize>)] = &[
            ("nothing due", vec![], vec![]),
            (
                "small ones fill the budget",
                vec![L(3), L(3), L(3), L(3)],
                vec![0, 1, 2],
            ),
            ("exactly full", vec![L(5), L(5), L(1)], vec![0, 1]),
            ("a big first one is taken alone", vec![L(50), L(1)], vec![0]),
            (
                "one that does not fit stops younger small ones",
                vec![L(4), L(9), L(1)],
                vec![0],
            ),
            (
                "broadcasts do not stop small ones behind them",
                vec![P, P, P, L(2), L(2)],
                vec![0, 1, 3, 4],
            ),
            (
                "small ones do not stop broadcasts behind them",
                vec![L(6), L(6), P, L(1), P],
                vec![0, 2, 4],
            ),
            (
                "unreadable ones are always cleared",
                vec![U, L(20), U, P],
                vec![0, 1, 2, 3],
            ),
        ];
        for (name, shapes, want) in table {
            assert_eq!(&pick(shapes, limits), want, "{name}");
        }
    }

    #[test]
    fn many_small_messages_share_one_pass() {
        let shapes = vec![L(1); 5000];
        let limits = Limits {
            deliveries: 2000,
            pages: 4,
        };
        assert_eq!(pick(&shapes, limits).len(), 2000);
    }
}
