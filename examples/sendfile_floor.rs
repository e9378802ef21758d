//! The least a tokio server can do to serve a file: a second anchor for `scripts/bench-downloads.sh`, beside nginx.
//!
//! ```sh
//! cargo build --release --examples && target/release/examples/sendfile_floor 127.0.0.1:18734 /path/to/file [THREADS]
//! ```
//!
//! Answers every request on a connection with the whole file: a fixed head, then sendfile(2) with the socket corked,
//! waiting for the kernel's "writable" after a send cut short. Connections are served as the server serves them:
//! on `THREADS` connection threads (default: one per core), or with 0 on tokio's multi-thread runtime.
//! No HTTP parsing, routing, store, mapping or timers: whatever the repository's server costs beyond this is its
//! stack's, and where this loop cannot beat nginx either, the machine (curl's copy on the same cores) decides.
//! Linux only.

#[cfg(target_os = "linux")]
mod floor {
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;
    use std::sync::Arc;

    use component_repository::server::ConnectionThreads;
    use component_repository::zero_copy::set_cork;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
    use tokio::net::{TcpListener, TcpStream};

    const END_OF_HEAD: &[u8] = b"\r\n\r\n";

    pub async fn run(bind: &str, path: &str, threads: usize) -> io::Result<()> {
        let file = Arc::new(File::open(path)?);
        let listener = TcpListener::bind(bind).await?;
        let threads = (threads > 0)
            .then(|| ConnectionThreads::start(threads))
            .transpose()?;
        loop {
            let (stream, _) = listener.accept().await?;
            let file = Arc::clone(&file);
            match &threads {
                None => drop(tokio::spawn(serve(stream, file))),
                // As the server does: the socket moves to the thread's runtime.
                Some(threads) => threads.serve(stream, |stream| async move {
                    let _ = serve(stream, file).await;
                })?,
            }
        }
    }

    async fn serve(mut stream: TcpStream, file: Arc<File>) -> io::Result<()> {
        stream.set_nodelay(true)?;
        let len = file.metadata()?.len();
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            while !request.windows(END_OF_HEAD.len()).any(|w| w == END_OF_HEAD) {
                match stream.read(&mut buf).await? {
                    0 => return Ok(()),
                    n => request.extend_from_slice(&buf[..n]),
                }
            }
            request.clear();
            stream.write_all(head.as_bytes()).await?;
            set_cork(&stream, true)?;
            let mut offset: libc::off_t = 0;
            while (offset as u64) < len {
                stream.writable().await?;
                let want = (len - offset as u64) as usize;
                let sent = stream.try_io(Interest::WRITABLE, || {
                    // SAFETY: both descriptors are open for the call; `offset` is ours.
                    let sent = unsafe {
                        libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut offset, want)
                    };
                    match sent {
                        n if n < 0 => Err(io::Error::last_os_error()),
                        0 => Err(io::ErrorKind::WriteZero.into()),
                        // Cut short by a full buffer: wait for the next "writable", as the server does.
                        n if (n as usize) < want => Err(io::ErrorKind::WouldBlock.into()),
                        _ => Ok(()),
                    }
                });
                match sent {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    other => other?,
                }
            }
            set_cork(&stream, false)?;
        }
    }
}

#[cfg(target_os = "linux")]
#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (bind, path, threads) = match args.as_slice() {
        [_, bind, path] => (bind, path, None),
        [_, bind, path, threads] => match threads.parse() {
            Ok(threads) => (bind, path, Some(threads)),
            Err(_) => {
                eprintln!("THREADS must be a number, not {threads:?}");
                std::process::exit(2);
            }
        },
        _ => {
            eprintln!("usage: sendfile_floor ADDRESS FILE [THREADS]");
            std::process::exit(2);
        }
    };
    let threads = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |cores| cores.get()));
    floor::run(bind, path, threads).await
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("sendfile_floor needs Linux");
}
