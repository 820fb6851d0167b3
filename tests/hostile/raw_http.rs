//! A raw HTTP/1.1 client: requests written byte by byte on a socket, so that no client library
//! tidies them up first, and answers parsed without judging them.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::path_segment;
use crate::request::Request;

#[derive(Debug)]
pub(crate) struct RawReply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) body: Vec<u8>,
}

impl RawReply {
    pub(crate) fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    pub(crate) fn header_str(&self, name: &str) -> Option<String> {
        self.header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// Sends `head` + `body` on a fresh connection and reads the answer to the end. The body is
/// written while the answer is read, as a client that answers early would see it.
async fn exchange(addr: SocketAddr, head: Vec<u8>, body: Vec<u8>) -> Result<RawReply, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        write.write_all(&head).await?;
        write.write_all(&body).await?;
        write.flush().await?;
        // Returned, not dropped: dropping the write half would half-close the connection, and
        // hyper (without `half_close`) drops a request whose client half-closed.
        Ok::<_, std::io::Error>(write)
    });
    let mut raw = Vec::new();
    let read_result = tokio::time::timeout(Duration::from_secs(30), read.read_to_end(&mut raw))
        .await
        .map_err(|_| "no answer within 30 s".to_owned())?;
    // The gateway may answer before it read the whole body (e.g. an invalid key): a failed
    // write is then fine, a failed read before a whole answer is not.
    let _ = writer.await;
    if let Err(error) = read_result
        && raw.is_empty()
    {
        return Err(format!("connection failed before any answer: {error}"));
    }
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Result<RawReply, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            format!(
                "no complete answer head: {:?}",
                String::from_utf8_lossy(raw)
            )
        })?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, Vec<u8>)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().as_bytes().to_vec()))
        .collect();
    let rest = &raw[end + 4..];
    let reply = RawReply {
        status,
        headers,
        body: Vec::new(),
    };
    let body = if reply
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case(b"chunked"))
    {
        dechunk(rest)?
    } else if let Some(len) = reply.header("content-length") {
        let len: usize = std::str::from_utf8(len)
            .ok()
            .and_then(|l| l.parse().ok())
            .ok_or("bad content-length")?;
        if rest.len() < len {
            return Err(format!("body cut short: {} of {len} bytes", rest.len()));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(RawReply { body, ..reply })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk")?;
        let size = std::str::from_utf8(&rest[..line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .ok_or("bad chunk size")?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(rest.get(..size).ok_or("chunk cut short")?);
        rest = rest.get(size + 2..).ok_or("chunk cut short")?;
    }
}

/// The head of a POST to `path` on a connection that closes after the answer.
fn request_head(path: &str, headers: &[(String, Vec<u8>)], body_len: usize) -> Vec<u8> {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\nContent-Length: \
         {body_len}\r\n"
    )
    .into_bytes();
    for (name, value) in headers {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// POSTs `headers` and `body` to `path` on a fresh connection.
pub(crate) async fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(String, Vec<u8>)],
    body: Vec<u8>,
) -> Result<RawReply, String> {
    exchange(addr, request_head(path, headers, body.len()), body).await
}

/// Sends a generated request to its topic's events route. The topic goes percent-encoded, so
/// the gateway sees exactly `request.topic` after decoding.
pub(crate) async fn send_raw(addr: SocketAddr, request: &Request) -> Result<RawReply, String> {
    let path = format!("/v1/topics/{}/events", path_segment(&request.topic));
    post(addr, &path, &request.headers, request.body.bytes()).await
}
