//! Full TLS 1.3 mutual-TLS handshakes (with a CRL) through a server whose certificate and
//! client verifier are reloadable, beside the same server built static.
//!
//! `cargo xtask bench certs` prints the ratio (`ours` is the reloadable server).

use criterion::{Criterion, criterion_group, criterion_main};
use sssonector_benches::contenders::tls;

fn handshakes(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let setup = tls::setup();
    let mut group = c.benchmark_group("certs_handshake");
    group.bench_function("static", |b| {
        b.iter(|| rt.block_on(tls::handshake(setup.fixed.clone(), setup.client.clone())))
    });
    group.bench_function("ours", |b| {
        b.iter(|| {
            rt.block_on(tls::handshake(
                setup.reloadable.clone(),
                setup.client.clone(),
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, handshakes);
criterion_main!(benches);
