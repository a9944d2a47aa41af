import Synchronization
import ThemisKit

/// A Secure Session that a connection's reader and writer both use: the value is guarded by a
/// lock, so wrapping and unwrapping never interleave inside one state change.
public final class SharedSession: Sendable {
    private let session: Mutex<SecureSession>

    public init(_ session: SecureSession) { self.session = Mutex(session) }

    public func receive(_ bytes: [UInt8]) throws(ThemisError) -> SecureSession.Event {
        try session.withLock { (session: inout SecureSession) throws(ThemisError) in try session.receive(bytes) }
    }

    public func wrap(_ bytes: [UInt8]) throws(ThemisError) -> [UInt8] {
        try session.withLock { (session: inout SecureSession) throws(ThemisError) in try session.wrap(bytes) }
    }
}
