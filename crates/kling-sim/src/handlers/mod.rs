//! Handlers for each kind of simulated call. Each returns the `data` of a success answer or
//! the error to answer with; the envelope is added by `routes`.

pub(crate) mod account;
pub(crate) mod create;
pub(crate) mod face;
pub(crate) mod query;
pub(crate) mod tasks;

/// The value of the first query parameter called `name`.
pub(crate) fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
