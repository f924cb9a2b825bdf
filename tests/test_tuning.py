"""The host's limits and waits: one record, read once by each host, and the one testing hook
(``_tuning.override``) that the rest of the suite uses to shrink them."""

import unittest

from Socket_Singleton import Socket_Singleton, _tuning

from . import support


class TestTuningHook(support.ThreadLeakCheck):
    def test_override_changes_the_record_and_restores_it(self):
        before = _tuning.current
        with _tuning.override(delivery_wait=0.05, max_pending=3) as tuning:
            self.assertIs(_tuning.current, tuning)
            self.assertEqual((tuning.delivery_wait, tuning.max_pending), (0.05, 3))
            self.assertEqual(tuning.peer_deadline, before.peer_deadline)  # the rest is kept
            with _tuning.override(max_pending=5):
                self.assertEqual((_tuning.current.delivery_wait, _tuning.current.max_pending),
                                 (0.05, 5))
            self.assertIs(_tuning.current, tuning)
        self.assertIs(_tuning.current, before)

    def test_unknown_names_are_refused(self):
        with self.assertRaisesRegex(TypeError, "no such setting: 'delivery_wiat'"):
            _tuning.override(delivery_wiat=0.05).start()
        self.assertIs(_tuning.current, _tuning.DEFAULTS)

    def test_the_record_is_read_only(self):
        with self.assertRaises(AttributeError):
            _tuning.current.delivery_wait = 0.05  # type: ignore[misc]
        self.assertEqual(_tuning.DEFAULTS.delivery_wait, 0.5)

    def test_a_host_keeps_its_values_for_its_life(self):
        with _tuning.override(max_pending=1):
            app = Socket_Singleton(port=0)
        self.addCleanup(app.release)
        app._append_args(("one",))
        app._append_args(("two",))  # the host's queue holds one launch: refused
        self.assertEqual(app.arguments, (("one",),))


if __name__ == "__main__":
    unittest.main()
