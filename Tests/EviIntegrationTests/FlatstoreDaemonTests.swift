import EventDatagramTestKit
import EventInterfaceTestKit
import Foundation
import Testing

/// flatstore through the daemon: options from the configuration file, MI and CLI rotate, SIGHUP.
@Suite(.serialized) struct FlatstoreDaemonTests {
    func lines(_ path: String) -> [String] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    @Test func rotateOverMIAndCLIAndSIGHUPReopenTheFile() async throws {
        try await withTeardown { teardown in
            let directory = TemporaryDirectory(prefix: "evi-flatd")
            teardown.add { directory.remove() }
            let path = directory.file("proxy.log")
            let daemon = try await Daemon.start(
                extra: """
                    events: [E_PIKE_BLOCKED]
                    modules:
                      event_flatstore: { delimiter: ";", escape_delimiter: ".", rotate_keep: 2, allowed_dirs: [\(directory.path)] }
                    """ + "\n")
            teardown.add { await daemon.stop() }
            let notices = try DatagramReceiver()
            _ = try daemon.mi(
                #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_FLATSTORE_ROTATION","\#(notices.socket)"],"id":1}"#
            )
            #expect(
                try daemon.mi(
                    #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_PIKE_BLOCKED","flatstore:\#(path)"],"id":1}"#
                )
                    == #"{"jsonrpc":"2.0","result":"OK","id":1}"#)
            #expect(
                try daemon.mi(
                    #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_PIKE_BLOCKED","flatstore:/tmp/elsewhere.log"],"id":1}"#
                ).contains(#""code":400"#))
            func raise(_ ip: String) throws {
                _ = try daemon.mi(
                    #"{"jsonrpc":"2.0","method":"raise_event","params":["E_PIKE_BLOCKED",{"ip":"\#(ip)","n":1}],"id":1}"#
                )
            }
            try raise("10.0.0.1;x")
            #expect(await eventually { lines(path) == ["E_PIKE_BLOCKED;10.0.0.1.x;1"] })

            // logrotate: move, then ask evi to reopen, over MI (legacy name) …
            #expect(rename(path, path + ".a") == 0)
            #expect(
                try daemon.mi(
                    #"{"jsonrpc":"2.0","method":"evi_flat_rotate","params":{"path_to_file":"\#(path)"},"id":1}"#)
                    == #"{"jsonrpc":"2.0","result":"OK","id":1}"#)
            try raise("10.0.0.2")
            #expect(await eventually { lines(path) == ["E_PIKE_BLOCKED;10.0.0.2;1"] })
            // … with the CLI …
            #expect(rename(path, path + ".b") == 0)
            let cli = try await run(eviBinary.path, ["rotate", path, "--mi", daemon.miURL])
            #expect(cli.status == 0, "\(cli.errors)")
            try raise("10.0.0.3")
            #expect(await eventually { lines(path) == ["E_PIKE_BLOCKED;10.0.0.3;1"] })
            // … and with SIGHUP.
            #expect(rename(path, path + ".c") == 0)
            try await Task.sleep(for: .milliseconds(1100))  // rotation notices are at most one a second per file
            daemon.process.signal(SIGHUP)
            try await Task.sleep(for: .milliseconds(300))
            try raise("10.0.0.4")
            #expect(await eventually { lines(path) == ["E_PIKE_BLOCKED;10.0.0.4;1"] })
            #expect(lines(path + ".a") == ["E_PIKE_BLOCKED;10.0.0.1.x;1"])
            #expect(lines(path + ".b") == ["E_PIKE_BLOCKED;10.0.0.2;1"])
            #expect(lines(path + ".c") == ["E_PIKE_BLOCKED;10.0.0.3;1"])
            let got = await notices.waitFor(count: 2)
            #expect(got.first?.contains(#""reason":"mi","filename":"\#(path)""#) == true, "\(got)")
            #expect(got.contains { $0.contains(#""reason":"signal""#) }, "\(got)")
            #expect(
                try daemon.mi(
                    #"{"jsonrpc":"2.0","method":"event_flatstore:rotate","params":["/tmp/unknown.log"],"id":1}"#)
                    == #"{"jsonrpc":"2.0","error":{"code":400,"message":"File not found","data":"no subscription writes /tmp/unknown.log"},"id":1}"#
            )
            #expect(daemon.process.isRunning)
            await notices.close()
        }
    }

    @Test func badModuleOptionsStopStartUp() async throws {
        for (config, message) in [
            (
                "modules:\n  event_flatstore: { format: xml }\n",
                "modules.event_flatstore.format: expected opensips or jsonl"
            ),
            ("modules:\n  event_flatstore: { rotate_size: huge }\n", "modules.event_flatstore.rotate_size"),
            (
                "modules:\n  event_flatstore: { delimiter: ',', escape_delimiter: '--' }\n",
                "escape_delimiter must be as long"
            ),
            ("modules:\n  event_flatstore: { colour: 1 }\n", "unknown key 'modules.event_flatstore.colour'"),
            (
                "modules:\n  event_stream: { reliable_mode: maybe }\n",
                "modules.event_stream.reliable_mode: expected true or false"
            ),
            ("modules:\n  event_stream: { timeout: 0 }\n", "modules.event_stream.timeout"),
            ("modules:\n  event_xmlrpc: { use_struct_param: 2 }\n", "modules.event_xmlrpc.use_struct_param"),
            ("modules:\n  event_kafka: { timeout: 0 }\n", "modules.event_kafka.timeout"),
            (
                "modules:\n  event_stream: { cert_file: /nonexistent.pem, key_file: /nonexistent.key }\n",
                "modules.event_stream.key_file: cannot read /nonexistent.key"
            ),
            ("modules:\n  event_rabbitmq: { ca_file: /nonexistent.pem }\n", "modules.event_rabbitmq: TLS files"),
            ("modules:\n  event_nats: {}\n", "unknown module 'modules.event_nats'"),
            ("modules:\n  event_rabbitmq: { heartbeat: -1 }\n", "modules.event_rabbitmq.heartbeat"),
            // Hardening: sizes that overflow are errors (this one trapped, exit 132).
            ("modules:\n  event_flatstore: { rotate_size: 99999999999999g }\n", "modules.event_flatstore.rotate_size"),
            ("queue_bytes: 99999999999999g\n", "queue_bytes: expected a size"),
            // A size under a key's minimum names the minimum, not the syntax.
            ("spool: { max_bytes: 4k }\n", "spool.max_bytes: at least 64k, got '4k'"),
            ("queue_bytes: 512\n", "queue_bytes: at least 1k, got '512'"),
            (
                "modules:\n  event_rabbitmq: { mandatory: sometimes }\n",
                "modules.event_rabbitmq.mandatory: expected auto, true or false"
            ),
        ] {
            let evi = try EviProcess(["serve"], config: "mi: { http: 127.0.0.1:0, datagram: off }\n" + config)
            #expect(await evi.waitForExit() == 2, "\(config)")
            #expect(evi.standardError.contains(message), "\(evi.standardError)")
            await evi.stop()
        }
    }

    @Test func withMIOffLoopbackAndNoAllowedDirsFilesCannotBeChosenOverMI() async throws {
        try await withTeardown { teardown in
            let directory = TemporaryDirectory(prefix: "evi-flatd")
            teardown.add { directory.remove() }
            let evi = try EviProcess(
                ["serve"],
                config: "mi: { http: 0.0.0.0:0, datagram: off, token: t0k }\nstate: memory\nevents: [E_X]\n"
                    + "subscriptions:\n  - { event: E_X, socket: \"flatstore:\(directory.file("config.log"))\" }\n")
            teardown.add { await evi.stop() }
            #expect(await eventually(timeout: .seconds(20)) { evi.standardOutput.contains("listening") })
            let port = Int(evi.standardOutput.components(separatedBy: "http://0.0.0.0:")[1].prefix { $0.isNumber }) ?? 0
            let reply = try RawHTTP.request(
                port: port, method: "POST", path: "/mi",
                body: Array(
                    #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_X","flatstore:/tmp/x.log"],"id":1}"#.utf8),
                headers: [("Authorization", "Bearer t0k")])
            #expect(reply.bodyText.contains("need event_flatstore.allowed_dirs"), "\(reply.bodyText)")
            // The configuration file's own flatstore subscription stands.
            let list = try RawHTTP.request(
                port: port, method: "POST", path: "/mi",
                body: Array(#"{"jsonrpc":"2.0","method":"evi:subscribers","params":["E_X"],"id":1}"#.utf8),
                headers: [("Authorization", "Bearer t0k")])
            #expect(list.bodyText.contains("config.log"))
            // The same for unix sockets (hardening): paths chosen over an exposed MI need allowed_dirs.
            let unix = try RawHTTP.request(
                port: port, method: "POST", path: "/mi",
                body: Array(
                    #"{"jsonrpc":"2.0","method":"evi:subscribe","params":["E_X","unix:/tmp/x.sock"],"id":1}"#.utf8),
                headers: [("Authorization", "Bearer t0k")])
            #expect(unix.bodyText.contains("need event_datagram.allowed_dirs"), "\(unix.bodyText)")
        }
    }

    /// Hardening: whether MI is on loopback is decided by the addresses a name resolves to, not
    /// by its spelling: `127.evi-test.invalid` needs a token like any other outside address.
    @Test func loopbackIsDecidedByAddressNotName() async throws {
        try await withTeardown { teardown in
            let evi = try EviProcess(
                ["serve"], config: "mi: { http: \"127.evi-test.invalid:0\", datagram: off }\nstate: memory\n")
            teardown.add { await evi.stop() }
            #expect(await evi.waitForExit() == 2)
            #expect(evi.standardError.contains("not loopback, requires mi.token"), "\(evi.standardError)")
            let local = try EviProcess(
                ["serve"], config: "mi: { http: \"localhost:0\", datagram: off }\nstate: memory\n")
            teardown.add { await local.stop() }
            #expect(
                await eventually(timeout: .seconds(20)) { local.standardOutput.contains("listening") },
                "\(local.standardError)")
        }
    }
}
