//! Opaque cursors for newest-first listings ordered by (`created_at`, `_id`).

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{DateTime, Document, doc};

/// A position in a (`created_at` desc, `_id` desc) listing: the last item returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) created_at: DateTime,
    pub(crate) id: ObjectId,
}

impl Cursor {
    /// 40 hex digits: the millisecond timestamp and the id.
    pub(crate) fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(20);
        bytes.extend_from_slice(&self.created_at.timestamp_millis().to_be_bytes());
        bytes.extend_from_slice(&self.id.bytes());
        hex::encode(bytes)
    }

    /// Any 40 lowercase hex digits, the cursor format the API documents; `None` for
    /// anything else. A position outside 1970 to the year 9999 (which `encode` never
    /// produces, and MongoDB cannot compare) is moved to the nearer end, which lists the
    /// same posts.
    pub(crate) fn decode(text: &str) -> Option<Self> {
        if text.len() != 40 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let bytes = hex::decode(text).ok()?;
        let (millis, id) = bytes.split_at_checked(8)?;
        let millis = i64::from_be_bytes(millis.try_into().ok()?).clamp(0, 253_402_300_799_999);
        let id: [u8; 12] = id.try_into().ok()?;
        Some(Self {
            created_at: DateTime::from_millis(millis),
            id: ObjectId::from_bytes(id),
        })
    }

    /// The filter for items after this cursor in the listing order.
    pub(crate) fn after(&self) -> Document {
        doc! { "$or": [
            { "created_at": { "$lt": self.created_at } },
            { "created_at": self.created_at, "_id": { "$lt": self.id } },
        ] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_survives_encoding() {
        let cursor = Cursor {
            created_at: DateTime::from_millis(1_700_000_000_123),
            id: ObjectId::new(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
    }

    #[test]
    fn garbage_is_not_a_cursor() {
        let uppercase = "AB".repeat(20);
        for text in ["", "zz", "00", &"0".repeat(41), "not-a-cursor", &uppercase] {
            assert_eq!(Cursor::decode(text), None, "{text}");
        }
    }

    #[test]
    fn a_position_beyond_what_mongodb_compares_is_moved_to_the_nearer_end() {
        let far_future = format!("{}{}", "7f".repeat(8), "00".repeat(12));
        let before_1970 = format!("{}{}", "ff".repeat(8), "00".repeat(12));
        let decoded = |text: &str| Cursor::decode(text).map(|c| c.created_at.timestamp_millis());
        assert_eq!(decoded(&far_future), Some(253_402_300_799_999));
        assert_eq!(decoded(&before_1970), Some(0));
    }
}
