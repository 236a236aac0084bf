from xend_fastmig.options import FastMigrationOptions


class Config(object):
    def __init__(self, **values):
        self.values = {}
        for key, value in values.items():
            self.values[key.replace("_", "-")] = value

    def get_config_string(self, name, default=None):
        return self.values.get(name, default)


def test_defaults_when_nothing_is_configured():
    opts = FastMigrationOptions.from_xoptions(Config())
    assert opts.enabled is True
    assert opts.drain_timeout == 30.0
    assert opts.verdict_timeout == 120.0
    assert opts.relocation_port == 8002


def test_values_are_read():
    opts = FastMigrationOptions.from_xoptions(Config(**{
        "xend_fast_migration": "no",
        "xend_fast_migration_drain_timeout": "2.5",
        "xend_fast_migration_verdict_timeout": "10",
        "xend_relocation_port": "9002"}))
    assert opts.enabled is False
    assert opts.drain_timeout == 2.5
    assert opts.verdict_timeout == 10.0
    assert opts.relocation_port == 9002


def test_garbage_falls_back_to_defaults_with_a_log_line(xend_log):
    opts = FastMigrationOptions.from_xoptions(Config(**{
        "xend_fast_migration": "perhaps",
        "xend_fast_migration_drain_timeout": "soon",
        "xend_fast_migration_verdict_timeout": "-3",
        "xend_relocation_port": "70000"}))
    assert opts.enabled is True
    assert opts.drain_timeout == 30.0
    assert opts.verdict_timeout == 120.0
    assert opts.relocation_port == 8002
    text = xend_log.text
    for name in ("xend-fast-migration ", "drain-timeout", "verdict-timeout",
                 "xend-relocation-port"):
        assert name in text


def test_an_unreadable_configuration_never_raises(mocker):
    broken = mocker.Mock()
    broken.get_config_string.side_effect = RuntimeError("sxp broken")
    opts = FastMigrationOptions.from_xoptions(broken)
    assert opts.enabled is True
