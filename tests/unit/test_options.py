import logging

import pytest

from xend_fastmig import options
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
        "xend_fast_migration_verdict_timeout": "150",
        "xend_relocation_port": "9002",
        "xend_fast_migration_early_release": "no"}))
    assert opts.enabled is False
    assert opts.drain_timeout == 2.5
    assert opts.verdict_timeout == 150.0
    assert opts.relocation_port == 9002
    assert opts.early_release is False


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


DRAIN = "xend_fast_migration_drain_timeout"
VERDICT = "xend_fast_migration_verdict_timeout"
REJECTED = ["inf", "-inf", "nan", "Infinity", "1e10", "1e400", "0", "-0",
            "-1", "-30", "soon", "", "  ", "30s", "0x10", [], {}, True,
            False, float("inf"), float("-inf"), float("nan"), 1e10, 10 ** 400,
            -5, 0]


def fastmig_warnings(caplog):
    return [r for r in caplog.records
            if r.name == "xend" and r.levelno == logging.WARNING]


@pytest.mark.parametrize("value", REJECTED)
@pytest.mark.parametrize("key,attribute,default", [
    (DRAIN, "drain_timeout", 30.0), (VERDICT, "verdict_timeout", 120.0)])
def test_unusable_timeouts_get_the_default_and_one_log_line(
        xend_log, key, attribute, default, value):
    """Regression (defect 2): inf never ended a drain, 1e10 made select()
    raise, so the verdict counted as unknown and the source was destroyed."""
    opts = FastMigrationOptions.from_xoptions(Config(**{key: value}))
    assert getattr(opts, attribute) == default
    warnings = fastmig_warnings(xend_log)
    assert len(warnings) == 1
    assert key.replace("_", "-") in warnings[0].getMessage()


@pytest.mark.parametrize("key,attribute,lowest,highest", [
    (DRAIN, "drain_timeout", 0.1, 300.0),
    (VERDICT, "verdict_timeout", 100.0, 3600.0)])
def test_timeout_ranges_include_their_ends(xend_log, key, attribute, lowest,
                                           highest):
    for value, expected in [(str(lowest), lowest), (highest, highest),
                            (" %s " % highest, highest)]:
        opts = FastMigrationOptions.from_xoptions(Config(**{key: value}))
        assert getattr(opts, attribute) == expected
    assert fastmig_warnings(xend_log) == []
    for outside in (lowest * 0.999, highest * 1.001):
        opts = FastMigrationOptions.from_xoptions(Config(**{key: outside}))
        assert getattr(opts, attribute) != outside
    assert len(fastmig_warnings(xend_log)) == 2
    assert "outside" in fastmig_warnings(xend_log)[0].getMessage()


def test_the_ranges_are_the_documented_ones():
    assert (options.MIN_DRAIN_TIMEOUT, options.MAX_DRAIN_TIMEOUT) == (
        0.1, 300.0)
    assert (options.MIN_VERDICT_TIMEOUT, options.MAX_VERDICT_TIMEOUT) == (
        100.0, 3600.0)
    # The defaults lie inside their ranges.
    assert 0.1 <= options.DEFAULT_DRAIN_TIMEOUT <= 300.0
    assert 100.0 <= options.DEFAULT_VERDICT_TIMEOUT <= 3600.0


@pytest.mark.parametrize("value,expected", [
    ("1", 1), ("65535", 65535), (" 9002 ", 9002), (9002, 9002),
    ("0", None), ("65536", None), ("-1", None), ("inf", None),
    ("nan", None), ("1e10", None), ("80.5", None), (True, None),
    ("port", None)])
def test_relocation_port_range(xend_log, value, expected):
    opts = FastMigrationOptions.from_xoptions(Config(
        xend_relocation_port=value))
    if expected is None:
        assert opts.relocation_port == 8002
        assert len(fastmig_warnings(xend_log)) == 1
    else:
        assert opts.relocation_port == expected
        assert fastmig_warnings(xend_log) == []


class Getters(object):
    """XendOptions with the getters of the patched tree: raw values."""

    def __init__(self, enabled, drain, verdict, port=None,
                 early_release=None):
        self.values = (enabled, drain, verdict, port, early_release)
        self.asked = []

    def get_xend_fast_migration_early_release(self):
        return self.values[4]

    def get_xend_fast_migration(self):
        return self.values[0]

    def get_xend_fast_migration_drain_timeout(self):
        return self.values[1]

    def get_xend_fast_migration_verdict_timeout(self):
        return self.values[2]

    def get_xend_relocation_port(self):
        return self.values[3]

    def get_config_string(self, name, default=None):
        self.asked.append(name)
        return "garbage"


def test_getters_are_used_where_the_options_object_has_them(xend_log):
    xoptions = Getters(False, "2.5", 200, 9003, False)
    opts = FastMigrationOptions.from_xoptions(xoptions)
    assert (opts.enabled, opts.drain_timeout, opts.verdict_timeout,
            opts.relocation_port, opts.early_release) == \
        (False, 2.5, 200.0, 9003, False)
    assert xoptions.asked == []
    assert fastmig_warnings(xend_log) == []


def test_values_from_getters_are_validated_too(xend_log):
    opts = FastMigrationOptions.from_xoptions(
        Getters("maybe", float("inf"), 1e10, 0, "sometimes"))
    assert (opts.enabled, opts.drain_timeout, opts.verdict_timeout,
            opts.relocation_port, opts.early_release) == \
        (True, 30.0, 120.0, 8002, True)
    assert len(fastmig_warnings(xend_log)) == 5


def test_getters_returning_none_mean_unset(xend_log):
    opts = FastMigrationOptions.from_xoptions(Getters(None, None, None))
    assert (opts.drain_timeout, opts.verdict_timeout) == (30.0, 120.0)
    assert fastmig_warnings(xend_log) == []


def test_a_failing_getter_never_raises(mocker, xend_log):
    xoptions = Getters(True, "5", "150")
    xoptions.get_xend_fast_migration_drain_timeout = mocker.Mock(
        side_effect=RuntimeError("broken"))
    opts = FastMigrationOptions.from_xoptions(xoptions)
    assert opts.drain_timeout == 30.0
    assert opts.verdict_timeout == 150.0
    assert "could not read" in xend_log.text


@pytest.mark.parametrize("word,expected", [
    ("yes", True), ("y", True), ("true", True), ("1", True), ("on", True),
    (" YES ", True), ("True", True), (True, True),
    ("no", False), ("n", False), ("false", False), ("0", False),
    ("off", False), ("Off", False), (False, False)])
def test_every_yes_and_no_word(xend_log, word, expected):
    opts = FastMigrationOptions.from_xoptions(Config(xend_fast_migration=word))
    assert opts.enabled is expected
    assert fastmig_warnings(xend_log) == []


@pytest.mark.parametrize("value,why", [
    ("soon", "not a number of seconds"), (False, "not a number of seconds"),
    (True, "not a number of seconds"), ([], "not a number of seconds"),
    ("inf", "not a finite number of seconds"),
    (float("-inf"), "not a finite number of seconds"),
    ("nan", "not a finite number of seconds"),
    ("1e10", "outside 0.1..300.0 seconds"), ("0", "outside 0.1..300.0 seconds"),
])
def test_each_rejection_says_why(xend_log, value, why):
    FastMigrationOptions.from_xoptions(Config(**{DRAIN: value}))
    assert [r.getMessage() for r in fastmig_warnings(xend_log)] == [
        "fastmig: option xend-fast-migration-drain-timeout has value %r, "
        "%s; using 30.0" % (value, why)]


@pytest.mark.parametrize("value,why", [
    ("maybe", "xend-fast-migration has value 'maybe', not yes or no; "
              "using True"),
    ("http", "xend-relocation-port has value 'http', not a port; "
             "using 8002"),
    ("0", "xend-relocation-port out of range: '0'; using 8002"),
])
def test_other_rejections_say_why(xend_log, value, why):
    name = "xend_fast_migration"
    if "port" in why:
        name = "xend_relocation_port"
    FastMigrationOptions.from_xoptions(Config(**{name: value}))
    assert [r.getMessage() for r in fastmig_warnings(xend_log)] == [
        "fastmig: option " + why]


def test_an_unreadable_option_is_named_with_its_error(mocker, xend_log):
    broken = mocker.Mock(spec=["get_config_string"])
    broken.get_config_string.side_effect = RuntimeError("sxp broken")
    FastMigrationOptions.from_xoptions(broken)
    assert ("fastmig: could not read option xend-fast-migration: "
            "sxp broken") in [r.getMessage() for r in xend_log.records]


def test_constructor_defaults_and_repr():
    opts = FastMigrationOptions()
    assert (opts.enabled, opts.drain_timeout, opts.verdict_timeout,
            opts.relocation_port) == (True, 30.0, 120.0, 8002)
    assert opts.early_release is True
    assert repr(opts) == ("FastMigrationOptions(enabled=True, "
                          "early_release=True, "
                          "drain_timeout=30.0, verdict_timeout=120.0, "
                          "relocation_port=8002)")


def test_the_resume_grace_is_five_seconds_unless_given():
    """Not an xend-config option: the grace a resume after a failed target
    grants the old backends (3.1's device timeout is of that order)."""
    assert FastMigrationOptions().resume_grace == 5.0
    assert FastMigrationOptions(resume_grace=0.3).resume_grace == 0.3
