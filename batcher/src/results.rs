//! How a batch service's response becomes one result per item.

use tower::BoxError;

/// A batch service's response: one result per item, in the order of the
/// batch's items.
///
/// Implemented for `Vec<Resp>` (every item succeeded) and for
/// `Vec<Result<Resp, E>>` (per-item errors; each item's error reaches only
/// its own caller). When the batch service returns `Vec<Result<T, E>>`, name
/// the response type (`BatchLayer::<Req, T>::new`) because that vector is
/// also a `Vec<Resp>` with `Resp = Result<T, E>`.
///
/// A response with the wrong number of results fails every item of the
/// batch with [`BatchFailed`](crate::BatchFailed).
pub trait IntoItemResults<Resp> {
    /// The results, in item order.
    fn into_item_results(self) -> impl ExactSizeIterator<Item = Result<Resp, BoxError>>;
}

impl<Resp> IntoItemResults<Resp> for Vec<Resp> {
    fn into_item_results(self) -> impl ExactSizeIterator<Item = Result<Resp, BoxError>> {
        self.into_iter().map(Ok)
    }
}

impl<Resp, E> IntoItemResults<Resp> for Vec<Result<Resp, E>>
where
    E: Into<BoxError>,
{
    fn into_item_results(self) -> impl ExactSizeIterator<Item = Result<Resp, BoxError>> {
        self.into_iter().map(|r| r.map_err(Into::into))
    }
}
