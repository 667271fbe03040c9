//! The inference path both transports share: deadline, id echo and output
//! selection around [`Repository::infer`].

use std::time::Duration;

use tokio::time::Instant;

use crate::{Error, InferRequest, InferResponse, Parameters, Repository, RequestedOutput};

/// A response with what its encoding needs from the request.
#[derive(Debug)]
pub(crate) struct Answer {
    /// Outputs in the order asked for (all the model's when none were).
    pub(crate) response: InferResponse,
    /// The outputs asked for, parallel to `response.outputs` (empty when
    /// none were named).
    pub(crate) requested: Vec<RequestedOutput>,
    /// The request's parameters (`binary_data_output`).
    pub(crate) request_parameters: Parameters,
}

/// Runs `request` on `repo`, answering [`Error::deadline_exceeded`] once
/// its deadline passes.
pub(crate) async fn run<R: Repository + ?Sized>(
    repo: &R,
    name: &str,
    version: Option<&str>,
    mut request: InferRequest,
) -> Result<Answer, Error> {
    let deadline_error = || Error::deadline_exceeded("the request's deadline passed");
    if request.deadline.is_some_and(|d| d <= Instant::now()) {
        return Err(deadline_error());
    }
    let id = request.id.clone();
    let requested = std::mem::take(&mut request.outputs);
    for (i, r) in requested.iter().enumerate() {
        if requested[..i].iter().any(|o| o.name == r.name) {
            return Err(Error::bad_request(format!(
                "output {:?} is requested twice",
                r.name
            )));
        }
    }
    let request_parameters = request.parameters.clone();
    request.outputs = requested.clone();
    let deadline = request.deadline;
    let call = repo.infer(name, version, request);
    let mut response = match deadline {
        Some(d) => tokio::time::timeout_at(d, call)
            .await
            .map_err(|_| deadline_error())??,
        None => call.await?,
    };
    response.id = id;
    if !requested.is_empty() {
        let mut all = std::mem::take(&mut response.outputs);
        for r in &requested {
            let i = all.iter().position(|o| o.name == r.name).ok_or_else(|| {
                Error::bad_request(format!(
                    "model {} has no output named {:?}",
                    response.model_name, r.name
                ))
            })?;
            response.outputs.push(all.swap_remove(i));
        }
    }
    Ok(Answer {
        response,
        requested,
        request_parameters,
    })
}

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (`H`, `M`, `S`,
/// `m` for ms, `u` for µs, `n` for ns).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    // Non-ASCII text would make the split below cut inside a character.
    if !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The deadline of a request: the earlier of `grpc-timeout` (a header on
/// REST, metadata on gRPC) and Triton's `timeout` request parameter (µs).
pub(crate) fn deadline(
    grpc_timeout: Option<&[u8]>,
    parameters: &Parameters,
) -> Result<Option<Instant>, Error> {
    let now = Instant::now();
    let header = match grpc_timeout {
        None => None,
        Some(v) => Some(
            std::str::from_utf8(v)
                .ok()
                .and_then(parse_grpc_timeout)
                .ok_or_else(|| {
                    Error::bad_request(format!(
                        "grpc-timeout {:?} is not a timeout such as 100m",
                        String::from_utf8_lossy(v)
                    ))
                })?,
        ),
    };
    let param = match parameters.get("timeout") {
        None => None,
        Some(v) => Some(Duration::from_micros(v.as_u64().ok_or_else(|| {
            Error::bad_request(format!(
                "the timeout parameter must be microseconds as a non-negative integer, not {v}"
            ))
        })?)),
    };
    Ok(match (header, param) {
        (Some(a), Some(b)) => Some(now + a.min(b)),
        (a, b) => a.or(b).map(|d| now + d),
    })
}
