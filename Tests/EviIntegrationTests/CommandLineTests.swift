import EventInterfaceTestKit
import Foundation
import Testing

/// The command line as a new user meets it: global MI options, suggestions, usage of the right
/// subcommand, hints, and the annotated default configuration.
@Suite(.serialized) struct CommandLineTests {
    @Test func miOptionsMayComeBeforeTheSubcommand() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start(extra: "events: [E_X]\n")
            teardown.add { await daemon.stop() }
            let before = try await run(eviBinary.path, ["--mi", daemon.miURL, "events"])
            #expect(before.status == 0, "\(before.errors)")
            #expect(before.output.contains(#""name":"E_X""#))
            let equals = try await run(eviBinary.path, ["--mi=udp://127.0.0.1:\(daemon.udpPort)", "events"])
            #expect(equals.status == 0, "\(equals.errors)")
            #expect(equals.output.contains(#""name":"E_X""#))
        }
    }

    /// `evi bench` runs `evi-bench` from beside `evi` with the same arguments and exit status;
    /// an `evi` copied somewhere without it says where it looked and exits 127.
    @Test func benchRunsTheBenchBesideEviOrSaysItIsMissing() async throws {
        let usage = try await run(eviBinary.path, ["bench", "--events", "0"])
        #expect(usage.status == 64, "\(usage.errors)")
        #expect(usage.errors.contains("--events must be 1…50000000"), "\(usage.errors)")
        let help = try await run(eviBinary.path, ["bench", "--help"])
        #expect(help.status == 0)
        #expect(help.output.contains("USAGE: evi bench"), "\(help.output)")
        let alone = TemporaryDirectory(prefix: "evi-alone")
        defer { alone.remove() }
        let copy = alone.file("evi")
        try FileManager.default.copyItem(atPath: eviBinary.path, toPath: copy)
        // A file just written may be "busy" for exec while a parallel test's fork still holds
        // a descriptor to it (ETXTBSY): tried again, briefly.
        var missing = try await run(copy, ["bench", "--scenario", "udp"])
        for _ in 0..<20 where missing.errors.contains("Text file busy") {
            try await Task.sleep(for: .milliseconds(100))
            missing = try await run(copy, ["bench", "--scenario", "udp"])
        }
        #expect(missing.status == 127)
        #expect(missing.errors == "evi: evi-bench not found beside evi (swift build builds it)\n")
    }

    @Test func aMistypedSubcommandGetsASuggestion() async throws {
        let result = try await run(eviBinary.path, ["subscibe", "E_X", "udp:127.0.0.1:9"])
        #expect(result.status == 64)
        #expect(
            result.errors
                == "evi: unknown command 'subscibe' (did you mean 'subscribe'?); 'evi --help' lists the commands\n")
    }

    @Test func badParametersShowTheSubcommandsUsage() async throws {
        let result = try await run(eviBinary.path, ["raise", "E_X", "notjson"])
        #expect(result.status == 64)
        #expect(result.errors.contains("Usage: evi raise"), "\(result.errors)")
    }

    @Test func raisingAnUnpublishedEventHintsAtPublish() async throws {
        try await withTeardown { teardown in
            let daemon = try await Daemon.start()
            teardown.add { await daemon.stop() }
            let result = try await run(eviBinary.path, ["raise", "E_NOPE", "--mi", daemon.miURL])
            #expect(result.status == 1)
            #expect(result.errors.contains("evi: publish it first (evi publish E_NOPE)"), "\(result.errors)")
        }
    }

    @Test func mistypedConfigurationKeysGetASuggestion() async throws {
        for (config, message) in [
            ("quue_size: 5\n", "unknown key 'quue_size' (did you mean 'queue_size'?)"),
            ("mi:\n  htp: 127.0.0.1:0\n", "unknown key 'mi.htp' (did you mean 'http'?)"),
            (
                "modules:\n  event_flatstor: {}\n",
                "unknown module 'modules.event_flatstor' (did you mean 'event_flatstore'?)"
            ),
            (
                "modules:\n  event_stream: { reliable: true }\n",
                "unknown key 'modules.event_stream.reliable' (did you mean 'reliable_mode'?)"
            ),
            (
                "state: postgres://evi:hunter2@127.0.0.1:9/evi\ndelivery: durable\n",
                "spool.dir: durable delivery needs a spool directory (state is postgres://evi:***@127.0.0.1:9/evi)"
            ),
            (
                "modules:\n  event_webhook: { secret: hunter2 }\n",
                "modules.event_webhook.secret: expected a Standard Webhooks secret"
            ),
            (
                "events: [E_A]\nsubscriptions:\n  - { event: E_A, socket: \"udp:127.0.0.1:9\", secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw }\n",
                "subscriptions[0].secret: secret applies to http:// and https:// sockets"
            ),
        ] {
            let evi = try EviProcess(["serve"], config: config)
            #expect(await evi.waitForExit() == 2)
            #expect(evi.standardError.contains(message), "\(evi.standardError)")
            await evi.stop()
        }
    }

    /// `--print-config` is a configuration evi itself accepts: every key, at its default.
    @Test func thePrintedConfigurationIsTheDefaultsAndStartsTheDaemon() async throws {
        try await withTeardown { teardown in
            let printed = try await run(eviBinary.path, ["serve", "--print-config"])
            #expect(printed.status == 0)
            for key in [
                "mi:", "http: 127.0.0.1:8888", "datagram: 127.0.0.1:8080", "token: null", "state: ./evi-state",
                "queue_size: 10000", "shutdown_grace: 5", "log_level: info", "failover_timeout: 30", "mandatory: auto",
                "rotate_keep: 5",
            ] {
                #expect(printed.output.contains(key), "missing \(key)")
            }
            let config = printed.output.replacingOccurrences(of: "127.0.0.1:8888", with: "127.0.0.1:0")
                .replacingOccurrences(of: "127.0.0.1:8080", with: "127.0.0.1:0")
                .replacingOccurrences(of: "state: ./evi-state", with: "state: memory")
            let evi = try EviProcess(["serve"], config: config)
            teardown.add { await evi.stop() }
            #expect(
                await eventually(timeout: .seconds(20)) { evi.standardOutput.contains("listening") },
                "\(evi.standardError)"
            )
        }
    }
}
