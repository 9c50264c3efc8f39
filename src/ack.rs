//! Tracks which records the sink has acknowledged and finds the durable position: the position
//! of the highest sequence number below which every record is acknowledged.

use headwater_contract::{Ack, Position};
use std::collections::VecDeque;

struct Entry {
    position: Position,
    acked: bool,
}

#[derive(Default)]
pub struct AckTracker {
    /// Sequence number of `entries[0]`.
    front_seq: u64,
    entries: VecDeque<Entry>,
    /// Every sequence number up to this one is acknowledged (`Ack::Through`).
    acked_through: u64,
    durable: Option<Position>,
}

impl AckTracker {
    /// Starts after `next_seq - 1`; the first tracked record must be `next_seq`.
    pub fn new(next_seq: u64) -> Self {
        AckTracker {
            front_seq: next_seq,
            acked_through: next_seq.saturating_sub(1),
            ..AckTracker::default()
        }
    }

    /// Registers the next event in source order. Events that need no sink write (progress)
    /// are born acknowledged.
    pub fn push(&mut self, seq: u64, position: Position, needs_ack: bool) {
        debug_assert_eq!(
            seq,
            self.front_seq + self.entries.len() as u64,
            "sequence numbers must be contiguous"
        );
        self.entries.push_back(Entry {
            position,
            acked: !needs_ack,
        });
    }

    pub fn ack(&mut self, ack: Ack) {
        match ack {
            Ack::Through(seq) => self.acked_through = self.acked_through.max(seq),
            Ack::One(seq) => {
                if let Some(index) = seq.checked_sub(self.front_seq) {
                    if let Some(entry) = self.entries.get_mut(index as usize) {
                        entry.acked = true;
                    }
                }
            }
        }
        self.advance();
    }

    fn advance(&mut self) {
        while let Some(front) = self.entries.front() {
            if !(front.acked || self.front_seq <= self.acked_through) {
                break;
            }
            if let Some(entry) = self.entries.pop_front() {
                self.durable = Some(entry.position);
            }
            self.front_seq += 1;
        }
    }

    /// Re-evaluates after pushes of already-acknowledged events.
    pub fn settle(&mut self) {
        self.advance();
    }

    /// The position below which everything is durable.
    pub fn durable(&self) -> Option<&Position> {
        self.durable.as_ref()
    }

    /// Every sequence number up to this one is durable.
    pub fn durable_through(&self) -> u64 {
        self.front_seq.saturating_sub(1)
    }

    /// Records handed out and not yet durable (including progress waiting behind them).
    pub fn in_flight(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use headwater_contract::{Lsn, PgPosition};

    fn pos(n: u64) -> Position {
        Position::Postgres(PgPosition::at(Lsn(n), 0))
    }

    fn tracker_with(n: u64) -> AckTracker {
        let mut tracker = AckTracker::new(1);
        for seq in 1..=n {
            tracker.push(seq, pos(seq * 10), true);
        }
        tracker
    }

    #[test]
    fn nothing_is_durable_until_acknowledged() {
        let tracker = tracker_with(3);
        assert_eq!(tracker.durable(), None);
        assert_eq!(tracker.in_flight(), 3);
    }

    #[test]
    fn out_of_order_acks_wait_for_the_gap() {
        let mut tracker = tracker_with(4);
        tracker.ack(Ack::One(2));
        tracker.ack(Ack::One(4));
        assert_eq!(tracker.durable(), None, "record 1 is not acknowledged yet");
        tracker.ack(Ack::One(1));
        assert_eq!(tracker.durable(), Some(&pos(20)), "3 is still a gap");
        tracker.ack(Ack::One(3));
        assert_eq!(tracker.durable(), Some(&pos(40)));
        assert_eq!(tracker.in_flight(), 0);
    }

    #[test]
    fn through_acks_cover_everything_before() {
        let mut tracker = tracker_with(5);
        tracker.ack(Ack::Through(3));
        assert_eq!(tracker.durable(), Some(&pos(30)));
        tracker.ack(Ack::Through(2)); // a late, smaller ack changes nothing
        assert_eq!(tracker.durable(), Some(&pos(30)));
        tracker.ack(Ack::One(5));
        assert_eq!(tracker.durable(), Some(&pos(30)));
        tracker.ack(Ack::Through(4));
        assert_eq!(tracker.durable(), Some(&pos(50)));
    }

    #[test]
    fn progress_events_advance_only_behind_acknowledged_records() {
        let mut tracker = AckTracker::new(1);
        tracker.push(1, pos(10), true);
        tracker.push(2, pos(20), false);
        tracker.push(3, pos(30), false);
        tracker.settle();
        assert_eq!(tracker.durable(), None);
        tracker.ack(Ack::One(1));
        assert_eq!(tracker.durable(), Some(&pos(30)));
        tracker.push(4, pos(40), false);
        tracker.settle();
        assert_eq!(tracker.durable(), Some(&pos(40)));
    }

    #[test]
    fn acks_for_unknown_sequence_numbers_are_ignored() {
        let mut tracker = tracker_with(2);
        tracker.ack(Ack::One(99));
        tracker.ack(Ack::One(0));
        assert_eq!(tracker.durable(), None);
        assert_eq!(tracker.in_flight(), 2);
    }
}
