"""validation.py against the API description, without a server.

    python3 -m unittest discover -s server/tests
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from imm_server import actions, analysis  # noqa: E402
from imm_server.replies import ApiError  # noqa: E402
from imm_server.validation import Description, validate  # noqa: E402

DESC = Description.load()


class ValidationTest(unittest.TestCase):
    def refused(self, action, params, code):
        with self.assertRaises(ApiError) as ctx:
            validate(DESC, action, params)
        self.assertEqual((ctx.exception.status, ctx.exception.code), (400, code), ctx.exception.message)
        return ctx.exception

    def test_required(self):
        self.refused("GetTask", {"ProjectName": "p", "TaskType": "t"}, "MissingParameter")
        self.refused("GetTask", {"ProjectName": "p", "TaskType": "t", "TaskId": ""}, "MissingParameter")

    def test_scalars(self):
        self.refused("DetectImageLabels", {"ProjectName": "p", "SourceURI": "s", "Threshold": "x"},
                     "InvalidParameter.Threshold")
        self.refused("DetectImageLabels", {"ProjectName": "p", "SourceURI": "s", "Threshold": "nan"},
                     "InvalidParameter.Threshold")
        self.refused("GetProject", {"ProjectName": "p", "WithStatistics": "1"}, "InvalidParameter.WithStatistics")
        out = validate(DESC, "GetProject", {"ProjectName": "p", "WithStatistics": "true"})
        self.assertEqual(out, {"ProjectName": "p", "WithStatistics": "true"})

    def test_json_shapes(self):
        base = {"ProjectName": "p"}
        err = self.refused("CreateMediaConvertTask", dict(base, Sources='[{"URI": 1}]'), "InvalidParameter.Sources")
        self.assertIn("Sources[0].URI", err.message)
        self.refused("CreateMediaConvertTask", dict(base, Sources="{"), "InvalidParameter.Sources")
        self.refused("CreateMediaConvertTask", dict(base, Sources='{"URI": "x"}'), "InvalidParameter.Sources")
        self.refused("CreateMediaConvertTask", dict(base, Sources="[NaN]"), "InvalidParameter.Sources")
        out = validate(DESC, "CreateMediaConvertTask", dict(base, Sources='[{"URI": "oss://b/o"}]', Other="x"))
        self.assertEqual(out, {"ProjectName": "p", "Sources": [{"URI": "oss://b/o"}]})

    def test_required_model_fields(self):
        # CreateImageToPDFTask.Sources[].URI is required in the description
        err = self.refused("CreateImageToPDFTask", {"ProjectName": "p", "TargetURI": "t", "Sources": "[{}]"},
                           "InvalidParameter.Sources")
        self.assertIn("Sources[0].URI is required", err.message)

    def test_every_action_is_routed(self):
        kinds = [actions.classify(DESC, a) for a in DESC.actions]
        self.assertEqual(len(kinds), 107)        # 105 and StopBinding, ResumeBinding
        self.assertEqual(len(DESC.task_types), 18)

    def test_analysis_is_deterministic(self):
        a = analysis.shaped(DESC, "DetectMediaMeta", {"ProjectName": "p", "SourceURI": "oss://b/1.mp4"})
        b = analysis.shaped(DESC, "DetectMediaMeta", {"ProjectName": "p", "SourceURI": "oss://b/1.mp4"})
        c = analysis.shaped(DESC, "DetectMediaMeta", {"ProjectName": "p", "SourceURI": "oss://b/2.mp4"})
        self.assertEqual(a, b)
        self.assertNotEqual(a, c)
        self.assertEqual(set(a), set(DESC.response_fields("DetectMediaMeta")) - {"RequestId"})
        self.assertIsInstance(a["Duration"], int)
        self.assertIsInstance(a["VideoStreams"], list)


if __name__ == "__main__":
    unittest.main()
