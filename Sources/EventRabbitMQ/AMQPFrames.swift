import NIOCore

/// The publishing subset of AMQP 0-9-1: frame layout and the few methods a confirming publisher
/// sends and receives. Written on SwiftNIO rather than wrapping librabbitmq: that library is
/// blocking (a thread per connection, a pause of every publish behind a confirm), and its
/// login is variadic; on NIO, publishes are pipelined and confirms arrive asynchronously.
enum AMQP {
    static let protocolHeader: [UInt8] = Array("AMQP".utf8) + [0, 0, 9, 1]
    static let frameEnd: UInt8 = 0xCE

    enum FrameType: UInt8 {
        case method = 1
        case header = 2
        case body = 3
        case heartbeat = 8
    }

    struct Frame {
        var type: UInt8
        var channel: UInt16
        var payload: ByteBuffer
    }

    /// Reads one whole frame from `buffer`, or nil when more bytes are needed.
    static func readFrame(_ buffer: inout ByteBuffer) throws -> Frame? {
        guard buffer.readableBytes >= 7,
            let size = buffer.getInteger(at: buffer.readerIndex + 3, as: UInt32.self),
            buffer.readableBytes >= 8 + Int(size)
        else { return nil }
        guard let type = buffer.readInteger(as: UInt8.self), let channel = buffer.readInteger(as: UInt16.self),
            buffer.readInteger(as: UInt32.self) != nil, let payload = buffer.readSlice(length: Int(size)),
            buffer.readInteger(as: UInt8.self) == frameEnd
        else { throw AMQPError("malformed frame") }
        return Frame(type: type, channel: channel, payload: payload)
    }

    static func writeFrame(type: FrameType, channel: UInt16, into buffer: inout ByteBuffer, payload: (inout ByteBuffer) -> Void) {
        buffer.writeInteger(type.rawValue)
        buffer.writeInteger(channel)
        let sizeIndex = buffer.writerIndex
        buffer.writeInteger(UInt32(0))
        let start = buffer.writerIndex
        payload(&buffer)
        buffer.setInteger(UInt32(buffer.writerIndex - start), at: sizeIndex)
        buffer.writeInteger(frameEnd)
    }

    static func writeMethod(
        _ classID: UInt16, _ methodID: UInt16, channel: UInt16, into buffer: inout ByteBuffer,
        arguments: (inout ByteBuffer) -> Void = { _ in }
    ) {
        writeFrame(type: .method, channel: channel, into: &buffer) { payload in
            payload.writeInteger(classID)
            payload.writeInteger(methodID)
            arguments(&payload)
        }
    }
}

struct AMQPError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension ByteBuffer {
    mutating func writeShortString(_ text: String) {
        let bytes = Array(text.utf8.prefix(255))
        writeInteger(UInt8(bytes.count))
        writeBytes(bytes)
    }

    mutating func writeLongString(_ bytes: [UInt8]) {
        writeInteger(UInt32(bytes.count))
        writeBytes(bytes)
    }

    /// A field table of string values.
    mutating func writeTable(_ entries: [(String, String)]) {
        let sizeIndex = writerIndex
        writeInteger(UInt32(0))
        let start = writerIndex
        for (key, value) in entries {
            writeShortString(key)
            writeInteger(UInt8(ascii: "S"))
            writeLongString(Array(value.utf8))
        }
        setInteger(UInt32(writerIndex - start), at: sizeIndex)
    }

    mutating func readShortString() -> String? {
        guard let length = readInteger(as: UInt8.self), let bytes = readBytes(length: Int(length)) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }
}
