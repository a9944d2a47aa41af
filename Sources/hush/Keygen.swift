import ArgumentParser
import Foundation
import HushClient
import HushProtocol
import HushTerminal
import ThemisKit

/// `hush keygen`: a Themis EC P-256 key pair as base64 containers, and its fingerprint.
struct Keygen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a Themis EC key pair (base64 key containers) and print its fingerprint.",
        discussion: "Without --out the private key is printed: you asked for it. With --out PREFIX it goes to PREFIX.priv (mode 0600) and the public key to PREFIX.pub; only the public key and the fingerprint are printed.")

    @Option(help: "Write PREFIX.priv (0600) and PREFIX.pub instead of printing the private key.")
    var out: String?

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        try await reportingErrors {
            let key = ThemisPrivateKey()
            let material = KeyMaterial(key)
            if let out {
                for path in [out + ".priv", out + ".pub"] where FileManager.default.fileExists(atPath: path) {
                    throw CLIError("\(path) exists; not overwriting it")
                }
                try KeyStoreFile.atomicWrite(Array((material.privateKey + "\n").utf8), to: out + ".priv")
                try KeyStoreFile.atomicWrite(Array((material.publicKey + "\n").utf8), to: out + ".pub")
                chmod(out + ".pub", 0o644)
                if json {
                    printOut(Format.jsonLine(KeyMaterial.Public(publicKey: material.publicKey, fingerprint: material.fingerprint,
                                                                privateKeyFile: out + ".priv", publicKeyFile: out + ".pub")))
                } else {
                    printOut("private key: \(out).priv (mode 0600)")
                    printOut("public key:  \(out).pub")
                    printOut("public key (base64): \(material.publicKey)")
                    printOut("fingerprint: \(material.fingerprint)")
                }
            } else if json {
                printOut(Format.jsonLine(material))
            } else {
                printOut("private key (base64, keep it secret): \(material.privateKey)")
                printOut("public key (base64): \(material.publicKey)")
                printOut("fingerprint: \(material.fingerprint)")
            }
        }
    }
}

struct KeyMaterial: Codable {
    var privateKey: String
    var publicKey: String
    var fingerprint: String

    init(_ key: ThemisPrivateKey) {
        privateKey = Base64.encode(key.containerBytes)
        publicKey = Base64.encode(key.publicKey.containerBytes)
        fingerprint = key.publicKey.fingerprint
    }

    struct Public: Codable {
        var publicKey: String
        var fingerprint: String
        var privateKeyFile: String
        var publicKeyFile: String
    }
}
