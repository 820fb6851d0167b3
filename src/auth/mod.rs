pub(crate) mod jwt;
