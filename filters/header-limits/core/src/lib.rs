//! Pure decision core of the header-limits filter.
