//! pcap files of a run (`podnet sim --pcap DIR`): `DIR/<node>.pcap` for what crosses a
//! node's underlay link, `DIR/<pod>.pcap` for a pod's own interface.
//!
//! Files use nanosecond timestamps (magic `a1b23c4d`), so the simulator's virtual
//! nanoseconds survive exactly; the link type is Ethernet and the snap length 65535.
//! Time zero of a run is [`EPOCH_UNIX_S`], 2000-01-01T00:00:00Z: a reader sees a date
//! that is plainly not wall-clock time, not 1970. Wireshark and tshark read them. The
//! bytes depend only on the frames and their times, so the same run writes the same
//! files.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, PcapError, TsResolution};

use crate::scenario::{Backend, Scenario};

/// Largest number of bytes of a frame a file keeps.
pub const SNAPLEN: u32 = 65535;

/// Simulated time zero in the files: 2000-01-01T00:00:00Z, in seconds since 1970.
pub const EPOCH_UNIX_S: u64 = 946_684_800;

/// One pcap file being written.
#[derive(Debug)]
pub struct PcapSink {
    /// `None` only while being finished or dropped.
    writer: Option<PcapWriter<BufWriter<File>>>,
    path: PathBuf,
}

impl PcapSink {
    /// Creates (or truncates) the file at `path` and writes the file header.
    pub fn create(path: &Path) -> io::Result<PcapSink> {
        let file = File::create(path)?;
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen: SNAPLEN,
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::NanoSecond,
            // Fixed, not native, so the bytes are the same on every machine.
            endianness: Endianness::Little,
        };
        let writer = PcapWriter::with_header(BufWriter::new(file), header).map_err(to_io)?;
        Ok(PcapSink {
            writer: Some(writer),
            path: path.to_path_buf(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one Ethernet frame seen at `t_ns` nanoseconds of simulated time. A frame
    /// longer than the snap length is cut, its original length recorded.
    pub fn write(&mut self, t_ns: u64, frame: &[u8]) -> io::Result<()> {
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| io::Error::other("pcap file already finished"))?;
        let kept = &frame[..frame.len().min(SNAPLEN as usize)];
        let orig_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let at = Duration::from_secs(EPOCH_UNIX_S) + Duration::from_nanos(t_ns);
        let packet = PcapPacket::new(at, orig_len, kept);
        writer.write_packet(&packet).map(drop).map_err(to_io)
    }

    /// Writes out what is buffered and closes the file, reporting any error (dropping a
    /// sink does the same but can only ignore errors).
    pub fn finish(mut self) -> io::Result<()> {
        self.close()
    }

    fn close(&mut self) -> io::Result<()> {
        match self.writer.take() {
            Some(writer) => writer.into_writer().flush(),
            None => Ok(()),
        }
    }
}

impl Drop for PcapSink {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

fn to_io(error: PcapError) -> io::Error {
    match error {
        PcapError::IoError(error) => error,
        other => io::Error::new(io::ErrorKind::InvalidInput, other),
    }
}

/// The pcap files of a run in one directory, by name (a node or a pod): `DIR/<name>.pcap`.
#[derive(Debug)]
pub struct PcapSet {
    dir: PathBuf,
    sinks: BTreeMap<String, PcapSink>,
}

impl PcapSet {
    /// A set in `dir` (created if missing) whose files are created on first write.
    pub fn new(dir: &Path) -> io::Result<PcapSet> {
        std::fs::create_dir_all(dir)?;
        Ok(PcapSet {
            dir: dir.to_path_buf(),
            sinks: BTreeMap::new(),
        })
    }

    /// A set in `dir` with a file for each of `names` created now, so that a node or pod
    /// that never sees a frame still gets an (empty) capture.
    pub fn open<I, S>(dir: &Path, names: I) -> io::Result<PcapSet>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = PcapSet::new(dir)?;
        for name in names {
            set.sink(name.as_ref())?;
        }
        Ok(set)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the file for `name` is (or will be).
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pcap"))
    }

    /// Names with a file, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sinks.keys().map(String::as_str)
    }

    /// Appends a frame seen by `name` at `t_ns`, creating its file on first use.
    pub fn write(&mut self, name: &str, t_ns: u64, frame: &[u8]) -> io::Result<()> {
        self.sink(name)?.write(t_ns, frame)
    }

    /// Writes out and closes every file, reporting the first error.
    pub fn finish(mut self) -> io::Result<()> {
        let sinks = std::mem::take(&mut self.sinks);
        let mut result = Ok(());
        for (_, sink) in sinks {
            let finished = sink.finish();
            if result.is_ok() {
                result = finished;
            }
        }
        result
    }

    fn sink(&mut self, name: &str) -> io::Result<&mut PcapSink> {
        if !self.sinks.contains_key(name) {
            // A pod outside `default` is `NS/NAME`: its file goes in a directory per
            // namespace, DIR/NS/NAME.pcap.
            let parts: Vec<&str> = name.split('/').collect();
            if parts.len() > 2
                || parts
                    .iter()
                    .any(|p| p.is_empty() || p.contains('\\') || *p == "." || *p == "..")
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("not a capture name: {name:?}"),
                ));
            }
            let path = self.path_of(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let sink = PcapSink::create(&path)?;
            self.sinks.insert(name.to_string(), sink);
        }
        Ok(self.sinks.get_mut(name).expect("inserted above"))
    }
}

/// The `-d` decode-as options tshark and Wireshark need for a scenario's pcaps: they
/// decode VXLAN on 4789 only, so flannel's VXLAN port (8472 by default) reads as bare UDP,
/// and flannel's UDP backend (8285) carries a bare IP packet no dissector expects there.
pub fn decode_options(sc: &Scenario) -> Vec<String> {
    match sc.cluster.backend {
        Backend::Vxlan => vec![format!("udp.port=={},vxlan", sc.cluster.vxlan.port)],
        Backend::Udp => vec![format!("udp.port=={},ip", sc.cluster.udp.port)],
        Backend::HostGw => Vec::new(),
    }
}

/// The captures of a run: one per node (its underlay link), one per pod present at the
/// start.
pub fn capture_names(sc: &Scenario) -> Vec<String> {
    sc.nodes
        .iter()
        .map(|n| n.name.clone())
        .chain(sc.pods.iter().map(|p| p.name.clone()))
        .collect()
}

/// What `--pcap DIR` prints and writes to `DIR/README`: which file holds what, and the
/// exact commands that open them decoded.
pub fn guide(sc: &Scenario, dir: &Path, names: &[String]) -> String {
    let options: String = decode_options(sc)
        .iter()
        .map(|o| format!(" -d {o}"))
        .collect();
    let file = |name: &str| dir.join(format!("{name}.pcap")).display().to_string();
    let mut text = format!(
        "pcaps of scenario {} in {}: <node>.pcap is what crosses the node's underlay link \
         (encapsulated, {}), <pod>.pcap the pod's own interface. Time 0 of the run is \
         2000-01-01T00:00:00Z.\n",
        sc.name,
        dir.display(),
        sc.cluster.backend.as_str(),
    );
    if !options.is_empty() {
        text.push_str(
            "tshark and Wireshark decode VXLAN on port 4789 only; the -d options below \
             decode flannel's encapsulation.\n",
        );
    }
    for name in names {
        text.push_str(&format!("  tshark -r {}{options}\n", file(name)));
    }
    if let Some(first) = names.first() {
        text.push_str(&format!("  wireshark{options} -r {}\n", file(first)));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    use pcap_file::pcap::PcapReader;

    /// A fresh directory under the target's temp dir, unique per test.
    fn temp_dir(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("podnet-pcap-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn read_all(path: &Path) -> (PcapHeader, Vec<(Duration, u32, Vec<u8>)>) {
        let mut reader = PcapReader::new(File::open(path).unwrap()).unwrap();
        let header = reader.header();
        let mut packets = Vec::new();
        while let Some(packet) = reader.next_packet() {
            let packet = packet.unwrap();
            packets.push((packet.timestamp, packet.orig_len, packet.data.into_owned()));
        }
        (header, packets)
    }

    /// An Ethernet frame carrying a UDP datagram between two pods (checksums valid).
    fn frame(n: u8) -> Vec<u8> {
        let mut f = vec![
            0x0a, 0x58, 0x0a, 0x02, 0x01, 0x03, // dst MAC
            0x0a, 0x58, 0x0a, 0x02, 0x01, 0x02, // src MAC
            0x08, 0x00, // IPv4
            0x45, 0x00, 0x00, 0x20, 0x00, 0x01, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 10, 2, 1, 2,
            10, 2, 1, 3, // IPv4 header
            0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, // UDP header, no checksum
            b'p', b'i', b'n', n,
        ];
        let c = podnet_switch::checksum::of(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f
    }

    #[test]
    fn round_trips_nanosecond_timestamps() {
        let dir = temp_dir("sink");
        let path = dir.join("worker-0.pcap");
        let mut sink = PcapSink::create(&path).unwrap();
        let times = [0u64, 1, 999_999_999, 1_000_000_001, 10_000_050_123];
        for (i, &t) in times.iter().enumerate() {
            sink.write(t, &frame(i as u8)).unwrap();
        }
        sink.finish().unwrap();

        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            &bytes[..4],
            &[0x4d, 0x3c, 0xb2, 0xa1],
            "nanosecond magic, LE"
        );
        let (header, packets) = read_all(&path);
        assert_eq!(header.ts_resolution, TsResolution::NanoSecond);
        assert_eq!(header.datalink, DataLink::ETHERNET);
        assert_eq!(header.snaplen, 65535);
        assert_eq!(packets.len(), times.len());
        for (i, &t) in times.iter().enumerate() {
            let (timestamp, orig_len, data) = &packets[i];
            // 2000-01-01T00:00:00Z plus simulated time.
            let epoch_ns = u128::from(EPOCH_UNIX_S) * 1_000_000_000;
            assert_eq!(timestamp.as_nanos(), epoch_ns + u128::from(t));
            assert_eq!(*orig_len as usize, frame(i as u8).len());
            assert_eq!(data, &frame(i as u8));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cuts_frames_longer_than_the_snap_length() {
        let dir = temp_dir("snap");
        let path = dir.join("big.pcap");
        let mut sink = PcapSink::create(&path).unwrap();
        sink.write(20_000_000_000, &vec![0xab; 70_000]).unwrap();
        sink.finish().unwrap();
        // The length on the wire is kept, as tcpdump -s does. (pcap-file's reader rejects
        // such records, Wireshark does not, so read the record header by hand.)
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 24 + 16 + 65535);
        let le32 = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        assert_eq!(
            le32(24),
            EPOCH_UNIX_S as u32 + 20,
            "seconds since 2000-01-01"
        );
        assert_eq!(le32(28), 0, "nanoseconds");
        assert_eq!(le32(32), 65535, "bytes kept");
        assert_eq!(le32(36), 70_000, "bytes on the wire");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn set_writes_one_file_per_name() {
        let dir = temp_dir("set");
        let mut set = PcapSet::open(&dir.join("out"), ["worker-0", "idle"]).unwrap();
        set.write("worker-0", 5, &frame(0)).unwrap();
        set.write("client", 7, &frame(1)).unwrap();
        set.write("worker-0", 9, &frame(2)).unwrap();
        assert!(set.write("../escape", 1, &frame(3)).is_err());
        assert_eq!(
            set.names().collect::<Vec<_>>(),
            ["client", "idle", "worker-0"]
        );
        let out = set.dir().to_path_buf();
        drop(set); // flushes

        let (_, worker) = read_all(&out.join("worker-0.pcap"));
        assert_eq!(worker.len(), 2);
        let epoch_ns = u128::from(EPOCH_UNIX_S) * 1_000_000_000;
        assert_eq!(worker[0].0.as_nanos(), epoch_ns + 5);
        assert_eq!(worker[1].0.as_nanos(), epoch_ns + 9);
        assert_eq!(worker[1].2, frame(2));
        let (_, client) = read_all(&out.join("client.pcap"));
        assert_eq!(client.len(), 1);
        assert_eq!(client[0].2, frame(1));
        let (_, idle) = read_all(&out.join("idle.pcap"));
        assert!(idle.is_empty());

        // Same frames and times, same bytes.
        let again = dir.join("again");
        let mut set = PcapSet::new(&again).unwrap();
        set.write("worker-0", 5, &frame(0)).unwrap();
        set.write("worker-0", 9, &frame(2)).unwrap();
        set.finish().unwrap();
        assert_eq!(
            std::fs::read(out.join("worker-0.pcap")).unwrap(),
            std::fs::read(again.join("worker-0.pcap")).unwrap()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tshark_reads_the_files() {
        let Ok(found) = std::process::Command::new("which").arg("tshark").output() else {
            eprintln!("skipped: cannot run `which`");
            return;
        };
        if !found.status.success() {
            eprintln!("skipped: tshark is not installed");
            return;
        }
        let dir = temp_dir("tshark");
        let path = dir.join("pod.pcap");
        let mut sink = PcapSink::create(&path).unwrap();
        sink.write(1_000, &frame(0)).unwrap();
        sink.write(2_000, &frame(1)).unwrap();
        sink.finish().unwrap();
        let status = std::process::Command::new("tshark")
            .arg("-r")
            .arg(&path)
            .output()
            .unwrap();
        assert!(status.status.success(), "{status:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
