import NIOConcurrencyHelpers
import ThemisKit

/// A Secure Session that a connection's reader and writer both use: the value is guarded by a
/// lock, so wrapping and unwrapping never interleave inside one state change. (NIO's lock is a
/// pthread mutex, which ThreadSanitizer sees; `Synchronization.Mutex` on Linux is not.)
public final class SharedSession: Sendable {
    private let session: NIOLockedValueBox<SecureSession>

    public init(_ session: SecureSession) { self.session = NIOLockedValueBox(session) }

    public func receive(_ bytes: [UInt8]) throws(ThemisError) -> SecureSession.Event {
        try session.withLockedValue { session in
            Result { () throws(ThemisError) in try session.receive(bytes) }
        }.get()
    }

    public func wrap(_ bytes: [UInt8]) throws(ThemisError) -> [UInt8] {
        try session.withLockedValue { session in
            Result { () throws(ThemisError) in try session.wrap(bytes) }
        }.get()
    }
}
