//! A scripted HTTP/1.1 server on 127.0.0.1 for tests (this crate's and the LSP harness's):
//! each request is answered as a route function says (a stream of chunks, a status, a JSON
//! body, silence, a connection cut mid-stream), and what it saw is recorded, including
//! whether the client hung up before the answer was over. Threads and std only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A request as the server saw it, and how its answer went.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// Which connection carried it (0, 1, ...): equal numbers mean a reused connection.
    pub conn: usize,
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Chunks of a streamed answer written before the end or the client's hang-up.
    pub chunks_sent: usize,
    /// The client closed the connection before the answer was complete.
    pub hung_up: bool,
    pub arrived: Option<Instant>,
    pub ended: Option<Instant>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

/// How the server answers a request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with `content_type`, the chunks written `gap` apart (chunked encoding); `cut`:
    /// close the connection after them instead of ending the body (an engine killed
    /// mid-stream).
    Stream {
        content_type: &'static str,
        chunks: Vec<String>,
        gap: Duration,
        cut: bool,
    },
    /// This status with this JSON body.
    Status(u16, String),
    /// 200 with this JSON body.
    Json(String),
    /// Accept and never answer.
    Silence,
    /// Read the request and close the connection without a word (a keep-alive connection
    /// that the server closed as the client reused it).
    Close,
}

impl Reply {
    /// Server-sent events, one `data:` event per item.
    pub fn sse(events: &[String], gap: Duration) -> Reply {
        Reply::Stream {
            content_type: "text/event-stream",
            chunks: events.iter().map(|e| format!("data: {e}\n\n")).collect(),
            gap,
            cut: false,
        }
    }

    /// JSON lines, one per item.
    pub fn ndjson(lines: &[String], gap: Duration) -> Reply {
        Reply::Stream {
            content_type: "application/x-ndjson",
            chunks: lines.iter().map(|l| format!("{l}\n")).collect(),
            gap,
            cut: false,
        }
    }
}

type Route = dyn Fn(&Seen) -> Reply + Send + Sync;

pub struct FakeServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl FakeServer {
    pub fn start(route: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let route: Arc<Route> = Arc::new(route);
        let (s, st) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            let conns = AtomicUsize::new(0);
            for stream in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let conn = conns.fetch_add(1, Ordering::SeqCst);
                let (route, seen, stop) = (route.clone(), s.clone(), st.clone());
                std::thread::spawn(move || serve(stream, conn, &*route, &seen, &stop));
            }
        });
        FakeServer { addr, seen, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The requests to `path`.
    pub fn seen_at(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }

    /// Wait until `pred` holds of the requests seen (or `within` passes).
    pub fn wait_until(&self, within: Duration, pred: impl Fn(&[Seen]) -> bool) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if pred(&self.seen()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        pred(&self.seen())
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// A port on 127.0.0.1 where nothing listens.
pub fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    l.local_addr().expect("local address").port()
}

fn serve(
    stream: TcpStream,
    conn: usize,
    route: &Route,
    seen: &Mutex<Vec<Seen>>,
    stop: &AtomicBool,
) {
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut out = stream;
    // One request after another on the connection, until the client closes it.
    while let Some(mut req) = read_request(&mut reader) {
        req.conn = conn;
        req.arrived = Some(Instant::now());
        let index = {
            let mut s = seen.lock().unwrap();
            s.push(req.clone());
            s.len() - 1
        };
        let reply = route(&req);
        let (chunks_sent, hung_up, keep) = answer(&mut out, reply, stop);
        {
            let mut s = seen.lock().unwrap();
            let r = &mut s[index];
            r.chunks_sent = chunks_sent;
            r.hung_up = hung_up;
            r.ended = Some(Instant::now());
        }
        if !keep {
            return;
        }
    }
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Seen> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Seen {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        ..Seen::default()
    })
}

/// Write the reply: (chunks written, whether the client hung up, keep the connection).
fn answer(out: &mut TcpStream, reply: Reply, stop: &AtomicBool) -> (usize, bool, bool) {
    let status_line = |code: u16| match code {
        200 => "200 OK",
        400 => "400 Bad Request",
        401 => "401 Unauthorized",
        404 => "404 Not Found",
        500 => "500 Internal Server Error",
        503 => "503 Service Unavailable",
        _ => "599 Scripted",
    };
    match reply {
        Reply::Close => (0, false, false),
        Reply::Status(code, body) => {
            let head = format!(
                "HTTP/1.1 {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                status_line(code),
                body.len()
            );
            let ok =
                out.write_all(head.as_bytes()).is_ok() && out.write_all(body.as_bytes()).is_ok();
            (0, !ok, ok)
        }
        Reply::Json(body) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let ok =
                out.write_all(head.as_bytes()).is_ok() && out.write_all(body.as_bytes()).is_ok();
            (0, !ok, ok)
        }
        Reply::Silence => {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            (0, false, false)
        }
        Reply::Stream {
            content_type,
            chunks,
            gap,
            cut,
        } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
            );
            if out.write_all(head.as_bytes()).is_err() {
                return (0, true, false);
            }
            let mut sent = 0;
            for c in &chunks {
                if !gap.is_zero() {
                    std::thread::sleep(gap);
                }
                let framed = format!("{:x}\r\n{c}\r\n", c.len());
                if out.write_all(framed.as_bytes()).is_err() || out.flush().is_err() {
                    return (sent, true, false);
                }
                sent += 1;
            }
            if cut {
                let _ = out.shutdown(std::net::Shutdown::Both);
                return (sent, false, false);
            }
            if out.write_all(b"0\r\n\r\n").is_err() {
                return (sent, true, false);
            }
            // A client that hung up right after the last chunk is not seen here; one that
            // hung up earlier made a write fail above (after the kernel's buffer took one).
            (sent, false, true)
        }
    }
}
