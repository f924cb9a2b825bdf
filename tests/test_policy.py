"""The host's policy for each launch, as the pure function it is."""

import unittest

from Socket_Singleton._policy import Admission, admit


class TestAdmission(unittest.TestCase):
    def test_a_launch_is_kept(self):
        self.assertEqual(admit(0, ("a",), 0, 0, False), Admission(1, False, True, "queued", ""))

    def test_max_clients(self):
        self.assertEqual(admit(1, ("a",), 2, 0, False).keep, True)
        self.assertEqual(admit(2, ("a",), 2, 0, False),
                         Admission(3, False, False, "ignored", "max_clients reached"))

    def test_release_threshold_marks_the_launch_that_reaches_it(self):
        self.assertEqual([admit(n, ("a",), 0, 3, False).final for n in range(4)],
                         [False, False, True, True])
        # a launch that is ignored still counts toward the threshold
        self.assertEqual(admit(2, ("a",), 1, 3, False)[:3], (3, True, False))

    def test_empty_launches(self):
        self.assertEqual(admit(0, (), 0, 0, False), Admission(
            1, False, False, "ignored", "there were no arguments to deliver"))
        self.assertEqual(admit(0, (), 0, 0, True).keep, True)
        self.assertEqual(admit(0, ("",), 0, 0, False).keep, True)  # one empty argument is one


if __name__ == "__main__":
    unittest.main()
