"""What the tests and the benchmarks share: settings, a pre-migrated database, the bot in a task or a child
process, a person in a chat, and the barrier that waits until the bot has nothing left to do.

- `settings`: TEST_TOKEN, make_settings, run_jarchy (the command line as a child process).
- `database`: one migrated template database per process, copied into each test's data dir.
- `bots`: RunningBot (the bot in the test's loop) and BotProcess (`python -m bot run`, for kill -9).
- `replies`: what the bot sent to a chat.
- `people`: Person, who taps and types in a private chat; the ADMIN and COORDINATORS of the report tests.
- `barrier`: `quiet(fake, services)`, instead of sleeping until the bot is probably done.
"""
