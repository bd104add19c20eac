//! Reading a request body whole, under a size limit, without letting a slow sender pin memory.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body;

/// Why a body was not read whole.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// More than the limit arrived (or would have).
    TooLarge,
    /// The connection broke or the framing was invalid.
    Unreadable,
}

/// Reads `body` into one buffer, failing as soon as more than `limit` bytes have arrived.
///
/// Chunks are copied as they arrive instead of kept until the end (what `collect()` does): each
/// chunk hyper hands over is a slice of its 8 KB read buffer, so a body trickled a byte at a
/// time kept one such buffer alive per byte received (200 trickling requests held 330 MB). A
/// body that arrives in one chunk, the usual case, is kept as it is, without a copy.
pub async fn read_limited<B>(body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut single: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Unreadable)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry no body
        };
        len = len.saturating_add(data.len());
        if len > limit {
            return Err(BodyError::TooLarge);
        }
        if data.is_empty() {
            continue;
        }
        match single.take() {
            None if joined.is_empty() => single = Some(data),
            previous => {
                if let Some(previous) = previous {
                    joined.extend_from_slice(&previous);
                }
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(single.unwrap_or_else(|| joined.freeze()))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::{Bytes, BytesMut};
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    use super::{BodyError, read_limited};

    fn body(
        chunks: Vec<Bytes>,
    ) -> StreamBody<impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>>> {
        StreamBody::new(futures::stream::iter(
            chunks.into_iter().map(|c| Ok(Frame::data(c))),
        ))
    }

    #[tokio::test]
    async fn a_trickled_body_keeps_none_of_the_buffers_it_arrived_in() {
        // As hyper hands them over: one-byte slices of a shared read buffer.
        let mut backing = BytesMut::with_capacity(4096);
        backing.extend_from_slice(&[b'x'; 1000]);
        let chunks: Vec<Bytes> = (0..1000).map(|_| backing.split_to(1).freeze()).collect();
        let read = read_limited(body(chunks), 4096).await.unwrap();
        assert_eq!(read, Bytes::from(vec![b'x'; 1000]));
        // Possible only when no slice of the read buffer is referenced any more.
        assert!(backing.try_reclaim(4096));
    }

    #[tokio::test]
    async fn a_body_in_one_chunk_is_returned_as_it_came() {
        let chunk = Bytes::from_static(br#"{"id":"evt_1"}"#);
        let read = read_limited(body(vec![chunk.clone()]), 4096).await.unwrap();
        assert_eq!(read.as_ptr(), chunk.as_ptr());
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_at_the_chunk_that_crosses_it() {
        let chunks = vec![Bytes::from(vec![b'x'; 3000]), Bytes::from(vec![b'x'; 2000])];
        assert_eq!(
            read_limited(body(chunks), 4096).await,
            Err(BodyError::TooLarge)
        );
        let exact = vec![Bytes::from(vec![b'x'; 3000]), Bytes::from(vec![b'x'; 1096])];
        assert_eq!(read_limited(body(exact), 4096).await.unwrap().len(), 4096);
    }
}
