//! The ceiling's per-message cost without any I/O: packing messages into a datagram and
//! walking them again, in ns per message, for the ceiling's message sizes. Later protocol
//! micro-benchmarks (pack, parse, order) compare to these numbers.

use cohort_bench::packing::{
    datagram_bytes_for, messages_per_datagram, pack_datagram, unpack_datagram,
};
use cohort_transport::DATAGRAM_BYTES_DEFAULT;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SIZES: [usize; 4] = [16, 64, 256, 1024];

fn pack_unpack(c: &mut Criterion) {
    let mut group = c.benchmark_group("ceiling_packing");
    for size in SIZES {
        let per = messages_per_datagram(DATAGRAM_BYTES_DEFAULT, size);
        let mut datagram = vec![0u8; datagram_bytes_for(per, size)];
        let message = vec![0xA5u8; size];
        group.throughput(Throughput::Elements(per as u64));
        group.bench_with_input(BenchmarkId::new("pack", size), &size, |b, _| {
            b.iter(|| pack_datagram(black_box(&mut datagram), black_box(&message), per, 1))
        });
        pack_datagram(&mut datagram, &message, per, 1);
        group.bench_with_input(BenchmarkId::new("unpack", size), &size, |b, _| {
            b.iter(|| unpack_datagram(black_box(&datagram)))
        });
        group.bench_with_input(BenchmarkId::new("pack_unpack", size), &size, |b, _| {
            b.iter(|| {
                pack_datagram(black_box(&mut datagram), black_box(&message), per, 1);
                unpack_datagram(black_box(&datagram))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pack_unpack);
criterion_main!(benches);
