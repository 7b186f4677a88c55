//! Pure decision core of the rate-limit filter.
