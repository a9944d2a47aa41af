import Benchmark
import Crypto
import ThemisKit

/// Throughput of the Themis primitives Hush rests on, for comparison with libthemis 0.15
/// (C, OpenSSL 3) on the same machine; see docs/BENCHMARKS.md.
let benchmarks: @Sendable () -> Void = {
    // Samples of 1,000 operations: per-sample timing and bookkeeping would otherwise weigh on
    // operations of a few microseconds. Slow operations override it with single-operation samples.
    Benchmark.defaultConfiguration = .init(
        metrics: [.throughput, .wallClock, .cpuTotal, .mallocCountTotal],
        timeUnits: .microseconds,
        warmupIterations: 3,
        scalingFactor: .kilo,
        maxDuration: .seconds(3),
        maxIterations: 1_000
    )
    let single = Benchmark.Configuration(scalingFactor: .one, maxDuration: .seconds(3), maxIterations: 100_000)

    let key = SymmetricKey(size: .bits256)
    for size in [64, 1024, 64 * 1024, 1024 * 1024] {
        let message = [UInt8](repeating: 0x5A, count: size)
        Benchmark("Seal encrypt+decrypt \(label(size))", configuration: size > 64 * 1024 ? single : Benchmark.defaultConfiguration) { benchmark in
            let cell = try SecureCell.Seal(key: key)
            for _ in benchmark.scaledIterations {
                let sealed = try cell.encrypt(message, context: Array("room".utf8))
                blackHole(try cell.decrypt(sealed, context: Array("room".utf8)))
            }
        }
    }

    Benchmark("Passphrase Seal encrypt+decrypt 1 KiB", configuration: .init(scalingFactor: .one, maxDuration: .seconds(5), maxIterations: 20)) { benchmark in
        let cell = try SecureCell.PassphraseSeal(passphrase: "correct horse battery staple")
        let message = [UInt8](repeating: 1, count: 1024)
        for _ in benchmark.scaledIterations {
            blackHole(try cell.decrypt(try cell.encrypt(message)))
        }
    }

    let alice = ThemisPrivateKey()
    let bob = ThemisPrivateKey()
    let kibibyte = [UInt8](repeating: 0xA5, count: 1024)
    Benchmark("Secure Message encrypt 1 KiB") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try SecureMessage.encrypt(kibibyte, from: alice, to: bob.publicKey))
        }
    }
    Benchmark("Secure Message decrypt 1 KiB") { benchmark in
        let encrypted = try SecureMessage.encrypt(kibibyte, from: alice, to: bob.publicKey)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(try SecureMessage.decrypt(encrypted, by: bob, from: alice.publicKey))
        }
    }
    Benchmark("Secure Message sign 1 KiB") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try SecureMessage.sign(kibibyte, with: alice))
        }
    }
    Benchmark("Secure Message verify 1 KiB") { benchmark in
        let signed = try SecureMessage.sign(kibibyte, with: alice)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(try SecureMessage.verify(signed, with: alice.publicKey))
        }
    }

    let clientKey = ThemisPrivateKey()
    let serverKey = ThemisPrivateKey()
    let clientID = Array("client".utf8)
    let serverID = Array("server".utf8)
    let lookup: SecureSession.PeerKeyLookup = { id in
        id == clientID ? clientKey.publicKey : id == serverID ? serverKey.publicKey : nil
    }

    Benchmark("Secure Session full handshake", configuration: single) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try establishedPair(clientKey, clientID, serverKey, serverID, lookup))
        }
    }

    for size in [1024, 64 * 1024] {
        let message = [UInt8](repeating: 0x33, count: size)
        Benchmark("Secure Session wrap+unwrap \(label(size))") { benchmark in
            var (client, server) = try establishedPair(clientKey, clientID, serverKey, serverID, lookup)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                blackHole(try server.receive(try client.wrap(message)))
            }
        }
    }
}

/// A client and a server, both created from scratch, taken through all four handshake messages.
func establishedPair(
    _ clientKey: ThemisPrivateKey, _ clientID: [UInt8], _ serverKey: ThemisPrivateKey, _ serverID: [UInt8],
    _ lookup: @escaping SecureSession.PeerKeyLookup
) throws -> (SecureSession, SecureSession) {
    var client = SecureSession(id: clientID, privateKey: clientKey, peerKeyLookup: lookup)
    var server = SecureSession(id: serverID, privateKey: serverKey, peerKeyLookup: lookup)
    guard case .reply(let second) = try server.receive(try client.connectRequest()),
          case .reply(let third) = try client.receive(second),
          case .established(let fourth?) = try server.receive(third),
          case .established(nil) = try client.receive(fourth)
    else { throw ThemisError.unexpectedMessage }
    return (client, server)
}

func label(_ size: Int) -> String {
    size >= 1024 * 1024 ? "\(size / (1024 * 1024)) MiB" : size >= 1024 ? "\(size / 1024) KiB" : "\(size) B"
}
