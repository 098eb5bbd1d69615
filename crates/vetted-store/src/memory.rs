//! In-memory backend (tests). TODO(store helper)
