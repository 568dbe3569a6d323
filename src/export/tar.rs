//! The tar framing of an export: POSIX ustar headers, a PAX extended
//! header (`x`) before any entry whose path or size does not fit ustar's
//! fields, the padding after each entry's data and the end of the archive.
//!
//! Pure: bytes in, bytes out, no I/O. Only regular files are written, and
//! every header is a function of (path, size, mtime) alone — mode 0644,
//! uid and gid 0, empty user and group names, no device numbers — so the
//! same entries always give the same archive, byte for byte. That is what
//! lets a broken export be resumed by building the archive again.
//!
//! Format constants: an archive written once must read back the same, and a
//! resumed export joins bytes of two runs, so these never change.

/// A tar block.
pub const BLOCK: usize = 512;
/// The end of an archive: two zero blocks.
pub const END: [u8; 2 * BLOCK] = [0; 2 * BLOCK];

/// Longest path the ustar name field holds (without the prefix field,
/// which this writer never uses: a longer path gets a PAX header).
const NAME_LEN: usize = 100;
/// Largest size the 11 octal digits of ustar's size field hold.
const MAX_USTAR_SIZE: u64 = 0o77_777_777_777;
/// Largest mtime the 11 octal digits of ustar's mtime field hold.
const MAX_USTAR_TIME: u64 = 0o77_777_777_777;
/// The name of every PAX extended header entry (Python's choice too).
const PAX_NAME: &str = "././@PaxHeader";

/// The header blocks of a regular file of `size` bytes at `path`, modified
/// at `mtime` (Unix seconds): a PAX extended header first when `path` is
/// longer than 100 bytes or `size` over ustar's 8 GiB, then the ustar
/// header. The file's data follows, then [`padding`] zero bytes.
pub fn file_header(path: &str, size: u64, mtime: u64) -> Vec<u8> {
    let mut records = String::new();
    if path.len() > NAME_LEN {
        records.push_str(&pax_record("path", path));
    }
    if size > MAX_USTAR_SIZE {
        records.push_str(&pax_record("size", &size.to_string()));
    }
    let mut out = Vec::with_capacity(3 * BLOCK + records.len());
    if !records.is_empty() {
        let len = records.len() as u64;
        out.extend_from_slice(&ustar_block(PAX_NAME, len, mtime, b'x'));
        out.extend_from_slice(records.as_bytes());
        out.resize(out.len() + padding(len), 0);
    }
    out.extend_from_slice(&ustar_block(path, size, mtime, b'0'));
    out
}

/// Zero bytes after an entry's `size` bytes of data, up to the next block.
pub fn padding(size: u64) -> usize {
    let rem = (size % BLOCK as u64) as usize;
    if rem == 0 {
        0
    } else {
        BLOCK - rem
    }
}

/// Bytes an entry takes in the archive: header blocks, data, padding.
pub fn entry_len(path: &str, size: u64, mtime: u64) -> u64 {
    file_header(path, size, mtime).len() as u64 + size + padding(size) as u64
}

/// One PAX record: `LEN KEY=VALUE\n`, where LEN counts the whole record,
/// its own digits included.
fn pax_record(key: &str, value: &str) -> String {
    // " KEY=VALUE\n" without the length.
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    // Adding the digits may add a digit; settle on the fixed point.
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    format!("{len} {key}={value}\n")
}

/// One ustar header block. Names longer than the field are cut (the PAX
/// header before it holds the whole path).
fn ustar_block(path: &str, size: u64, mtime: u64, kind: u8) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    let name = path.as_bytes();
    let name = &name[..name.len().min(NAME_LEN)];
    b[..name.len()].copy_from_slice(name);
    octal(&mut b[100..108], 0o644);
    octal(&mut b[108..116], 0);
    octal(&mut b[116..124], 0);
    // Past 8 GiB the PAX `size` record says it; the field holds zero.
    octal(
        &mut b[124..136],
        if size > MAX_USTAR_SIZE { 0 } else { size },
    );
    octal(&mut b[136..148], mtime.min(MAX_USTAR_TIME));
    b[156] = kind;
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    // uname, gname (265..329) stay empty.
    octal(&mut b[329..337], 0);
    octal(&mut b[337..345], 0);
    // The checksum is computed with its own field as eight spaces, and
    // written as six octal digits, NUL, space.
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    b[148..154].copy_from_slice(format!("{sum:06o}").as_bytes());
    b[154] = 0;
    b[155] = b' ';
    b
}

/// `value` in octal, zero-padded to fill `field` but its last byte (NUL).
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(b: &[u8], range: std::ops::Range<usize>) -> &str {
        std::str::from_utf8(&b[range])
            .unwrap()
            .trim_end_matches('\0')
    }

    fn checksum_ok(b: &[u8]) -> bool {
        let stored = u32::from_str_radix(field(b, 148..154), 8).unwrap();
        let sum: u32 = b
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(x)
                }
            })
            .sum();
        stored == sum
    }

    #[test]
    fn a_short_path_is_one_ustar_block() {
        let h = file_header("moments/pic-1", 1234, 1_700_000_000);
        assert_eq!(h.len(), BLOCK);
        assert_eq!(field(&h, 0..100), "moments/pic-1");
        assert_eq!(field(&h, 100..108), "0000644");
        assert_eq!(field(&h, 108..116), "0000000");
        assert_eq!(field(&h, 124..136), "00000002322");
        assert_eq!(
            u64::from_str_radix(field(&h, 136..148), 8).unwrap(),
            1_700_000_000
        );
        assert_eq!(h[156], b'0');
        assert_eq!(&h[257..265], b"ustar\x0000");
        assert!(h[265..329].iter().all(|&x| x == 0), "empty uname, gname");
        assert!(checksum_ok(&h));
    }

    #[test]
    fn a_long_path_gets_a_pax_header_whose_length_counts_itself() {
        let path = format!("moments/{}", "a".repeat(128));
        let h = file_header(&path, 7, 5);
        assert_eq!(h.len(), 3 * BLOCK, "x header, its record, the header");
        assert_eq!(field(&h, 0..100), PAX_NAME);
        assert_eq!(h[156], b'x');
        assert!(checksum_ok(&h[..BLOCK]));
        let len = u64::from_str_radix(field(&h, 124..136), 8).unwrap() as usize;
        let record = std::str::from_utf8(&h[BLOCK..BLOCK + len]).unwrap();
        assert_eq!(record, format!("{len} path={path}\n"));
        assert!(h[BLOCK + len..2 * BLOCK].iter().all(|&x| x == 0));
        let ustar = &h[2 * BLOCK..];
        assert_eq!(field(ustar, 0..100), &path[..100]);
        assert!(checksum_ok(ustar));
    }

    #[test]
    fn pax_record_lengths_settle_across_digit_boundaries() {
        for n in 0..2000 {
            let value = "v".repeat(n);
            let r = pax_record("path", &value);
            let (len, _) = r.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), r.len(), "{n}");
        }
    }

    #[test]
    fn exactly_one_hundred_bytes_fit_ustar() {
        let path = "p".repeat(100);
        assert_eq!(file_header(&path, 0, 0).len(), BLOCK);
        assert_eq!(file_header(&format!("{path}q"), 0, 0).len(), 3 * BLOCK);
    }

    #[test]
    fn sizes_over_eight_gib_go_to_pax() {
        let h = file_header("s/big", MAX_USTAR_SIZE + 1, 0);
        let record = std::str::from_utf8(&h[BLOCK..]).unwrap();
        assert!(record.starts_with(&format!("19 size={}\n", MAX_USTAR_SIZE + 1)));
        assert_eq!(field(&h[2 * BLOCK..], 124..136), "00000000000");
    }

    #[test]
    fn padding_fills_the_block() {
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
        assert_eq!(padding(513), 511);
        assert_eq!(entry_len("a/b", 513, 0), 512 + 1024);
    }

    #[test]
    fn headers_are_deterministic() {
        assert_eq!(file_header("a/b", 9, 3), file_header("a/b", 9, 3));
        assert_ne!(file_header("a/b", 9, 3), file_header("a/b", 9, 4));
    }
}
