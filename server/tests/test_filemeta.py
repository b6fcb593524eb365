"""Tests of server/imm_server/filemeta.py: the file-metadata actions of the local IMM server.

    python3 -m unittest discover -s server/tests
"""

import base64
import os
import random
import re
import sys
import threading
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from imm_server.filemeta import FileMetaError, FileMetaStore  # noqa: E402

P, D = "proj", "ds"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, t=1700000000.0):
        self.t = t

    def __call__(self):
        return self.t


def call(store, action, **params):
    params.setdefault("ProjectName", P)
    params.setdefault("DatasetName", D)
    return store.handle(action, params)


def index(store, *files):
    return call(store, "BatchIndexFileMeta", Files=list(files))


def uris(result):
    return [f["URI"] for f in result["Files"]]


def query(store, q, **extra):
    return uris(call(store, "SimpleQuery", Query=q, MaxResults="100", **extra))


def leaf(field, op, value=None):
    node = {"Field": field, "Operation": op}
    if value is not None:
        node["Value"] = value
    return node


def all_pages(store, action, **params):
    """Every page of a paged action; the files in order, and how many calls it took."""
    out, token, calls = [], None, 0
    while True:
        extra = dict(params)
        if token:
            extra["NextToken"] = token
        res = call(store, action, **extra)
        calls += 1
        out.extend(uris(res))
        token = res.get("NextToken")
        if not token:
            return out, calls
        if calls > 1000:
            raise AssertionError("paging does not end")


class ErrorCase(unittest.TestCase):
    def assertError(self, code, fn, *args, status=400, **kwargs):
        with self.assertRaises(FileMetaError) as cm:
            fn(*args, **kwargs)
        self.assertEqual(cm.exception.code, code, cm.exception.message)
        self.assertEqual(cm.exception.status, status)
        self.assertTrue(cm.exception.message)
        return cm.exception


# ---------------------------------------------------------------------------
# Index, update, get, delete
# ---------------------------------------------------------------------------

class TestFiles(ErrorCase):
    def setUp(self):
        self.clock = Clock()
        self.store = FileMetaStore(clock=self.clock)

    def test_index_then_get_has_the_request_fields_and_derived_ones(self):
        res = call(self.store, "IndexFileMeta", File={
            "URI": "oss://bucket/photos/cat.JPG", "CustomLabels": {"owner": "ann"},
            "Labels": [{"LabelName": "cat", "LabelConfidence": 0.9}], "Title": "A cat"})
        self.assertRegex(res["EventId"], r"^[0-9A-F]{3}-[0-9a-f]{27}$")
        f = call(self.store, "GetFileMeta", URI="oss://bucket/photos/cat.JPG")["Files"][0]
        self.assertEqual(f["CustomLabels"], {"owner": "ann"})
        self.assertEqual(f["Labels"][0]["LabelName"], "cat")
        self.assertEqual(f["Title"], "A cat")
        self.assertEqual((f["ProjectName"], f["DatasetName"], f["ObjectType"]), (P, D, "file"))
        self.assertEqual(f["Filename"], "cat.JPG")
        self.assertEqual((f["ContentType"], f["MediaType"]), ("image/jpeg", "image"))
        self.assertEqual(f["OSSURI"], "oss://bucket/photos/cat.JPG")
        self.assertEqual(f["CreateTime"], "2023-11-15T06:13:20.000000000+08:00")
        self.assertIsInstance(f["Size"], int)
        self.assertRegex(f["ObjectId"], r"^[0-9a-f]{64}$")

    def test_derived_values_are_deterministic(self):
        other = FileMetaStore(clock=Clock())
        for s in (self.store, other):
            call(s, "IndexFileMeta", File={"URI": "oss://b/x.mp4"})
        a = call(self.store, "GetFileMeta", URI="oss://b/x.mp4")["Files"][0]
        b = call(other, "GetFileMeta", URI="oss://b/x.mp4")["Files"][0]
        self.assertEqual(a, b)
        self.assertEqual(a["MediaType"], "video")
        call(self.store, "IndexFileMeta", File={"URI": "oss://b/y.mp4"})
        c = call(self.store, "GetFileMeta", URI="oss://b/y.mp4")["Files"][0]
        self.assertNotEqual(a["ObjectId"], c["ObjectId"])

    def test_the_request_wins_over_derived_values_but_not_over_system_fields(self):
        call(self.store, "IndexFileMeta", File={"URI": "oss://b/x.bin", "ContentType": "image/png",
                                                "Size": 7, "ProjectName": "evil", "ObjectType": "dir"})
        f = call(self.store, "GetFileMeta", URI="oss://b/x.bin")["Files"][0]
        self.assertEqual((f["ContentType"], f["MediaType"], f["Size"]), ("image/png", "image", 7))
        self.assertEqual((f["ProjectName"], f["ObjectType"]), (P, "file"))

    def test_an_empty_lua_table_is_an_empty_array(self):
        # lua-cjson encodes an empty table as {}
        call(self.store, "IndexFileMeta", File={"URI": "oss://b/1", "Labels": {}, "CustomLabels": {}})
        f = call(self.store, "GetFileMeta", URI="oss://b/1")["Files"][0]
        self.assertEqual((f["Labels"], f["CustomLabels"]), ([], {}))
        call(self.store, "UpdateFileMeta", File={"URI": "oss://b/1", "Figures": {}})
        self.assertEqual(call(self.store, "GetFileMeta", URI="oss://b/1")["Files"][0]["Figures"], [])
        self.assertEqual(query(self.store, leaf("Labels", "exist")), [])

    def test_event_ids_differ(self):
        a = call(self.store, "IndexFileMeta", File={"URI": "oss://b/1"})["EventId"]
        b = call(self.store, "IndexFileMeta", File={"URI": "oss://b/1"})["EventId"]
        self.assertNotEqual(a, b)

    def test_indexed_files_are_visible_to_queries_at_once(self):
        call(self.store, "IndexFileMeta", File={"URI": "oss://b/now.jpg"})
        self.assertEqual(query(self.store, leaf("URI", "eq", "oss://b/now.jpg")), ["oss://b/now.jpg"])
        self.assertEqual(call(self.store, "FuzzyQuery", Query="now")["TotalHits"], 1)

    def test_reindex_replaces_the_metadata_and_keeps_create_time(self):
        call(self.store, "IndexFileMeta", File={"URI": "oss://b/1", "CustomLabels": {"a": "1"}, "Title": "t"})
        self.clock.t += 60
        call(self.store, "IndexFileMeta", File={"URI": "oss://b/1", "CustomLabels": {"b": "2"}})
        f = call(self.store, "GetFileMeta", URI="oss://b/1")["Files"][0]
        self.assertEqual(f["CustomLabels"], {"b": "2"})
        self.assertNotIn("Title", f)
        self.assertEqual(f["CreateTime"], "2023-11-15T06:13:20.000000000+08:00")
        self.assertEqual(f["UpdateTime"], "2023-11-15T06:14:20.000000000+08:00")

    def test_update_changes_only_the_documented_fields(self):
        call(self.store, "IndexFileMeta", File={"URI": "oss://b/1", "CustomLabels": {"a": "1"},
                                                "ContentType": "image/png"})
        self.clock.t += 1.5
        res = call(self.store, "UpdateFileMeta", File={"URI": "oss://b/1", "CustomLabels": {"a": "2"},
                                                       "CustomId": "id-9", "ContentType": "text/plain",
                                                       "Figures": [{"FigureId": "f1"}]})
        self.assertEqual(res, {})
        f = call(self.store, "GetFileMeta", URI="oss://b/1")["Files"][0]
        self.assertEqual((f["CustomLabels"], f["CustomId"], f["Figures"]), ({"a": "2"}, "id-9", [{"FigureId": "f1"}]))
        self.assertEqual(f["ContentType"], "image/png")
        self.assertEqual(f["UpdateTime"], "2023-11-15T06:13:21.500000000+08:00")
        self.assertEqual(query(self.store, leaf("CustomLabels.a", "eq", "2")), ["oss://b/1"])

    def test_update_of_a_file_not_indexed_is_not_found(self):
        self.assertError("ResourceNotFound", call, self.store, "UpdateFileMeta",
                         File={"URI": "oss://b/none"}, status=404)

    def test_delete(self):
        index(self.store, {"URI": "oss://b/1"}, {"URI": "oss://b/2"})
        self.assertEqual(call(self.store, "DeleteFileMeta", URI="oss://b/1"), {})
        self.assertError("ResourceNotFound", call, self.store, "GetFileMeta", URI="oss://b/1", status=404)
        self.assertEqual(query(self.store, None), ["oss://b/2"])
        # The service answers success whether or not the file was indexed.
        self.assertEqual(call(self.store, "DeleteFileMeta", URI="oss://b/1"), {})

    def test_batch_get_answers_the_indexed_files_in_the_order_asked(self):
        index(self.store, {"URI": "oss://b/1"}, {"URI": "oss://b/2"}, {"URI": "oss://b/3"})
        res = call(self.store, "BatchGetFileMeta", URIs=["oss://b/3", "oss://b/none", "oss://b/1"])
        self.assertEqual(uris(res), ["oss://b/3", "oss://b/1"])

    def test_with_fields(self):
        index(self.store, {"URI": "oss://b/1", "CustomLabels": {"k": "v"}})
        f = call(self.store, "GetFileMeta", URI="oss://b/1", WithFields=["URI", "CustomLabels", "Nope"])["Files"][0]
        self.assertEqual(f, {"URI": "oss://b/1", "CustomLabels": {"k": "v"}})
        res = call(self.store, "BatchGetFileMeta", URIs=["oss://b/1"], WithFields=["Size"])
        self.assertEqual(list(res["Files"][0]), ["Size"])
        res = call(self.store, "SimpleQuery", WithFields=["URI"])
        self.assertEqual(res["Files"], [{"URI": "oss://b/1"}])

    def test_files_are_keyed_by_project_dataset_and_uri(self):
        call(self.store, "IndexFileMeta", File={"URI": "oss://b/1", "Title": "one"})
        call(self.store, "IndexFileMeta", DatasetName="other", File={"URI": "oss://b/1", "Title": "two"})
        call(self.store, "IndexFileMeta", ProjectName="p2", File={"URI": "oss://b/1", "Title": "three"})
        titles = [call(self.store, "GetFileMeta", URI="oss://b/1", **kw)["Files"][0]["Title"]
                  for kw in ({}, {"DatasetName": "other"}, {"ProjectName": "p2"})]
        self.assertEqual(titles, ["one", "two", "three"])
        self.assertEqual(call(self.store, "SimpleQuery", DatasetName="other")["TotalHits"], 1)
        call(self.store, "DeleteFileMeta", DatasetName="other", URI="oss://b/1")
        self.assertEqual(call(self.store, "GetFileMeta", URI="oss://b/1")["Files"][0]["Title"], "one")

    def test_an_unknown_dataset_is_not_found_and_nothing_is_stored(self):
        known = {(P, D)}
        store = FileMetaStore(dataset_exists=lambda p, d: (p, d) in known)
        e = self.assertError("ResourceNotFound", call, store, "IndexFileMeta", DatasetName="nope",
                             File={"URI": "oss://b/1"}, status=404)
        self.assertIn("nope", e.message)
        known.add((P, "nope"))
        self.assertEqual(call(store, "SimpleQuery", DatasetName="nope")["TotalHits"], 0)
        for action, extra in (("GetFileMeta", {"URI": "oss://b/1"}), ("SimpleQuery", {}),
                              ("FuzzyQuery", {"Query": "x"}), ("DeleteFileMeta", {"URI": "oss://b/1"}),
                              ("BatchGetFileMeta", {"URIs": ["oss://b/1"]})):
            self.assertError("ResourceNotFound", call, store, action, DatasetName="gone", status=404, **extra)

    def test_a_reply_is_a_copy(self):
        index(self.store, {"URI": "oss://b/1", "CustomLabels": {"k": "v"}})
        for res in (call(self.store, "GetFileMeta", URI="oss://b/1"), call(self.store, "SimpleQuery"),
                    call(self.store, "GetFileMeta", URI="oss://b/1", WithFields=["CustomLabels"])):
            res["Files"][0]["CustomLabels"]["k"] = "changed"
            res["Files"][0]["Odd"] = 1
        f = call(self.store, "GetFileMeta", URI="oss://b/1")["Files"][0]
        self.assertEqual(f["CustomLabels"], {"k": "v"})
        self.assertNotIn("Odd", f)

    def test_threads_index_and_query_at_once(self):
        errors = []

        def work(n):
            try:
                for i in range(60):
                    call(self.store, "IndexFileMeta", File={"URI": f"oss://b/{n}/{i}", "Size": i})
                    call(self.store, "SimpleQuery", Query=leaf("Size", "gte", "0"), MaxResults="5")
                    if i % 3 == 0:
                        call(self.store, "DeleteFileMeta", URI=f"oss://b/{n}/{i}")
            except Exception as e:      # noqa: BLE001 - any failure of a thread fails the test
                errors.append(e)
        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        # Switch threads as often as the interpreter can, so that an action left
        # unlocked is caught in the middle (a dict changing while it is read).
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(interval)
        self.assertEqual(errors, [])
        self.assertEqual(call(self.store, "SimpleQuery")["TotalHits"], 4 * 40)

    def test_dataset_exists_is_called_without_the_store_locked(self):
        # The server's callable may take the server's lock, which the server may
        # hold while it calls the store: holding ours then could deadlock.
        free = []

        def exists(project, dataset):
            def probe():
                ok = store._lock.acquire(blocking=False)
                if ok:
                    store._lock.release()
                free.append(ok)
            t = threading.Thread(target=probe)
            t.start()
            t.join()
            return True
        store = FileMetaStore(dataset_exists=exists, clock=Clock())
        call(store, "IndexFileMeta", File={"URI": "oss://b/1"})
        call(store, "SimpleQuery")
        self.assertEqual(free, [True, True])

    def test_a_bad_file_in_a_batch_indexes_none(self):
        self.assertError("MissingParameter", index, self.store, {"URI": "oss://b/1"}, {"Title": "no uri"})
        self.assertEqual(call(self.store, "SimpleQuery")["TotalHits"], 0)


# ---------------------------------------------------------------------------
# SimpleQuery: the operators
# ---------------------------------------------------------------------------

def fixture_store():
    store = FileMetaStore(clock=Clock())
    index(store,
          {"URI": "oss://b/a/1.jpg", "Size": 100, "Title": "Red fox jumps", "CustomLabels": {"color": "red", "n": 3},
           "Labels": [{"LabelName": "fox", "LabelConfidence": 0.9}, {"LabelName": "tree", "LabelConfidence": 0.2}]},
          {"URI": "oss://b/a/2.png", "Size": 250, "Title": "The red barn", "CustomLabels": {"color": "blue"},
           "Labels": [{"LabelName": "tree", "LabelConfidence": 0.95}]},
          {"URI": "oss://b/b/3.mp4", "Size": 250.5, "Title": "fox in snow",
           "Labels": [{"LabelName": "fox", "LabelConfidence": 0.1}, {"LabelName": "snow", "LabelConfidence": 0.8}]},
          {"URI": "oss://b/b/4.txt", "Size": 7, "CustomLabels": {"color": "Red", "n": 12}})
    return store


class TestOperators(ErrorCase):
    def setUp(self):
        self.store = fixture_store()

    def q(self, node):
        return sorted(query(self.store, node))

    def test_comparisons_on_numbers_are_numeric(self):
        self.assertEqual(self.q(leaf("Size", "eq", "250")), ["oss://b/a/2.png"])
        self.assertEqual(self.q(leaf("Size", "eq", "250.0")), ["oss://b/a/2.png"])
        self.assertEqual(self.q(leaf("Size", "gt", "100")), ["oss://b/a/2.png", "oss://b/b/3.mp4"])
        self.assertEqual(self.q(leaf("Size", "gte", "100")), ["oss://b/a/1.jpg", "oss://b/a/2.png", "oss://b/b/3.mp4"])
        self.assertEqual(self.q(leaf("Size", "lt", "100")), ["oss://b/b/4.txt"])
        self.assertEqual(self.q(leaf("Size", "lte", "100")), ["oss://b/a/1.jpg", "oss://b/b/4.txt"])
        # 12 > 3 as numbers, though "12" < "3" as text
        self.assertEqual(self.q(leaf("CustomLabels.n", "gt", "5")), ["oss://b/b/4.txt"])
        # text that is not a number matches no number
        self.assertEqual(self.q(leaf("Size", "lt", "abc")), [])

    def test_comparisons_on_text_are_exact_and_by_code_point(self):
        self.assertEqual(self.q(leaf("CustomLabels.color", "eq", "red")), ["oss://b/a/1.jpg"])
        self.assertEqual(self.q(leaf("CustomLabels.color", "lt", "c")), ["oss://b/a/2.png", "oss://b/b/4.txt"])
        self.assertEqual(self.q(leaf("CustomLabels.color", "gte", "red")), ["oss://b/a/1.jpg"])

    def test_an_array_field_matches_when_any_element_does(self):
        self.assertEqual(self.q(leaf("Labels.LabelName", "eq", "tree")), ["oss://b/a/1.jpg", "oss://b/a/2.png"])
        self.assertEqual(self.q(leaf("Labels.LabelConfidence", "gt", "0.85")), ["oss://b/a/1.jpg", "oss://b/a/2.png"])

    def test_prefix(self):
        self.assertEqual(self.q(leaf("URI", "prefix", "oss://b/a/")), ["oss://b/a/1.jpg", "oss://b/a/2.png"])
        self.assertEqual(self.q(leaf("Title", "prefix", "fox")), ["oss://b/b/3.mp4"])
        self.assertEqual(self.q(leaf("Size", "prefix", "2")), [])   # numbers have no prefix

    def test_match_phrase(self):
        self.assertEqual(self.q(leaf("Title", "match-phrase", "RED")), ["oss://b/a/1.jpg", "oss://b/a/2.png"])
        self.assertEqual(self.q(leaf("Title", "match-phrase", "red fox")), ["oss://b/a/1.jpg"])
        self.assertEqual(self.q(leaf("Title", "match-phrase", "fox red")), [])     # words in order
        self.assertEqual(self.q(leaf("Title", "match-phrase", "ju")), [])          # whole words

    def test_match_phrase_splits_cjk_characters(self):
        call(self.store, "IndexFileMeta", File={"URI": "oss://b/c.jpg", "Title": "阿里云的猫"})
        self.assertEqual(self.q(leaf("Title", "match-phrase", "里云")), ["oss://b/c.jpg"])
        self.assertEqual(self.q(leaf("Title", "match-phrase", "云里")), [])

    def test_exist(self):
        self.assertEqual(self.q(leaf("CustomLabels.n", "exist")), ["oss://b/a/1.jpg", "oss://b/b/4.txt"])
        self.assertEqual(self.q(leaf("Title", "exist")), ["oss://b/a/1.jpg", "oss://b/a/2.png", "oss://b/b/3.mp4"])
        self.assertEqual(self.q(leaf("CustomLabels", "exist")),
                         ["oss://b/a/1.jpg", "oss://b/a/2.png", "oss://b/b/4.txt"])
        self.assertEqual(self.q(leaf("Nothing", "exist")), [])

    def test_and_or_not_without_field_as_the_sdk_sends_them(self):
        red = leaf("Title", "match-phrase", "red")
        fox = leaf("Labels.LabelName", "eq", "fox")
        self.assertEqual(self.q({"Operation": "and", "SubQueries": [red, fox]}), ["oss://b/a/1.jpg"])
        self.assertEqual(self.q({"Operation": "or", "SubQueries": [red, fox]}),
                         ["oss://b/a/1.jpg", "oss://b/a/2.png", "oss://b/b/3.mp4"])
        self.assertEqual(self.q({"Operation": "not", "SubQueries": [red]}), ["oss://b/b/3.mp4", "oss://b/b/4.txt"])
        # not of several: none of them
        self.assertEqual(self.q({"Operation": "not", "SubQueries": [red, fox]}), ["oss://b/b/4.txt"])

    def test_leaves_may_carry_the_empty_subqueries_the_python_sdk_sends(self):
        node = dict(leaf("Size", "eq", "7"), SubQueries=[])
        self.assertEqual(self.q({"Operation": "and", "SubQueries": [node], "Field": ""}), ["oss://b/b/4.txt"])

    def test_nesting(self):
        node = {"Operation": "and", "SubQueries": [
            leaf("URI", "prefix", "oss://b/"),
            {"Operation": "or", "SubQueries": [
                leaf("Size", "lt", "10"),
                {"Operation": "and", "SubQueries": [
                    leaf("Labels.LabelName", "eq", "fox"),
                    {"Operation": "not", "SubQueries": [leaf("CustomLabels.color", "exist")]}]}]}]}
        self.assertEqual(self.q(node), ["oss://b/b/3.mp4", "oss://b/b/4.txt"])

    def test_nested_matches_within_one_element(self):
        fox_sure = {"Operation": "and", "SubQueries": [leaf("Labels.LabelName", "eq", "fox"),
                                                      leaf("Labels.LabelConfidence", "gt", "0.5")]}
        # Without nested, fox and "some label above 0.5" may come from different labels.
        self.assertEqual(self.q(fox_sure), ["oss://b/a/1.jpg", "oss://b/b/3.mp4"])
        self.assertEqual(self.q({"Operation": "nested", "SubQueries": [fox_sure]}), ["oss://b/a/1.jpg"])
        self.assertEqual(self.q({"Operation": "nested", "Field": "Labels", "SubQueries": [fox_sure]}),
                         ["oss://b/a/1.jpg"])
        not_fox = {"Operation": "not", "SubQueries": [leaf("Labels.LabelName", "eq", "fox")]}
        sure = {"Operation": "and", "SubQueries": [leaf("Labels.LabelConfidence", "gt", "0.5")]}
        # several SubQueries of nested: one element satisfies them all
        self.assertEqual(self.q({"Operation": "nested", "SubQueries": [not_fox, sure]}),
                         ["oss://b/a/2.png", "oss://b/b/3.mp4"])
        self.assertEqual(self.q({"Operation": "nested", "SubQueries": [not_fox]}),
                         ["oss://b/a/1.jpg", "oss://b/a/2.png", "oss://b/b/3.mp4"])

    def test_no_query_matches_every_file(self):
        self.assertEqual(len(self.q(None)), 4)
        self.assertEqual(len(self.q({})), 4)

    def test_bad_queries(self):
        bad = [
            ("a list", []),
            ("no operation", {"Field": "Size", "Value": "1"}),
            ("unknown operation", leaf("Size", "wildcard", "1*")),
            ("undocumented match", leaf("Title", "match", "fox")),
            ("leaf without field", {"Operation": "eq", "Value": "1"}),
            ("leaf without value", leaf("Size", "eq")),
            ("value not a string", leaf("Size", "eq", 1)),
            ("leaf with subqueries", dict(leaf("Size", "eq", "1"), SubQueries=[leaf("Size", "eq", "1")])),
            ("and without subqueries", {"Operation": "and"}),
            ("or with empty subqueries", {"Operation": "or", "SubQueries": []}),
            ("subqueries not a list", {"Operation": "or", "SubQueries": leaf("Size", "eq", "1")}),
            ("subquery not an object", {"Operation": "or", "SubQueries": ["x"]}),
            ("too many subqueries", {"Operation": "or", "SubQueries": [leaf("Size", "eq", "1")] * 101}),
            ("nested with a leaf below", {"Operation": "nested", "SubQueries": [leaf("Labels.LabelName", "eq", "x")]}),
            ("nested over two arrays", {"Operation": "nested", "SubQueries": [{"Operation": "and", "SubQueries": [
                leaf("Labels.LabelName", "eq", "x"), leaf("Figures.Age", "gt", "3")]}]}),
            ("nested over junk", {"Operation": "nested", "SubQueries": [{"Operation": "and", "SubQueries": ["x"]}]}),
            ("nested over an object", {"Operation": "nested", "SubQueries": [
                {"Operation": "and", "SubQueries": {"Field": "Labels.LabelName"}}]}),
            ("nested field not the leaves' array", {"Operation": "nested", "Field": "Figures", "SubQueries": [
                {"Operation": "and", "SubQueries": [leaf("Labels.LabelName", "eq", "x")]}]}),
        ]
        for name, q in bad:
            with self.subTest(name):
                self.assertError("InvalidParameter.Query", call, self.store, "SimpleQuery", Query=q)

    def test_depth_limit(self):
        node = leaf("Size", "eq", "7")
        for _ in range(5):
            node = {"Operation": "and", "SubQueries": [node]}
        self.assertEqual(self.q(node), ["oss://b/b/4.txt"])
        self.assertError("InvalidParameter.Query", call, self.store, "SimpleQuery",
                         Query={"Operation": "and", "SubQueries": [node]})


# ---------------------------------------------------------------------------
# Sort, paging
# ---------------------------------------------------------------------------

class TestSortAndPaging(ErrorCase):
    def setUp(self):
        self.store = fixture_store()

    def sorted_by(self, sort, order=None):
        extra = {"Sort": sort}
        if order is not None:
            extra["Order"] = order
        return query(self.store, None, **extra)

    def test_sort_asc_and_desc(self):
        self.assertEqual(self.sorted_by("Size", "asc"),
                         ["oss://b/b/4.txt", "oss://b/a/1.jpg", "oss://b/a/2.png", "oss://b/b/3.mp4"])
        self.assertEqual(self.sorted_by("Size", "desc"),
                         ["oss://b/b/3.mp4", "oss://b/a/2.png", "oss://b/a/1.jpg", "oss://b/b/4.txt"])

    def test_order_defaults_to_desc(self):
        self.assertEqual(self.sorted_by("Size"), self.sorted_by("Size", "desc"))

    def test_several_fields_and_a_short_order_leaves_the_rest_asc(self):
        index(self.store, {"URI": "oss://b/z.jpg", "Size": 250, "Title": "aaa"})
        self.assertEqual(self.sorted_by("Size,Title", "desc"),
                         ["oss://b/b/3.mp4", "oss://b/a/2.png", "oss://b/z.jpg", "oss://b/a/1.jpg", "oss://b/b/4.txt"])
        self.assertEqual(self.sorted_by("Size,Title", "desc,desc"),
                         ["oss://b/b/3.mp4", "oss://b/z.jpg", "oss://b/a/2.png", "oss://b/a/1.jpg", "oss://b/b/4.txt"])

    def test_missing_values_sort_last_in_both_orders(self):
        self.assertEqual(self.sorted_by("CustomLabels.n", "asc"),
                         ["oss://b/a/1.jpg", "oss://b/b/4.txt", "oss://b/a/2.png", "oss://b/b/3.mp4"])
        self.assertEqual(self.sorted_by("CustomLabels.n", "desc"),
                         ["oss://b/b/4.txt", "oss://b/a/1.jpg", "oss://b/a/2.png", "oss://b/b/3.mp4"])

    def test_an_array_field_sorts_by_its_smallest_value_up_and_largest_down(self):
        self.assertEqual(self.sorted_by("Labels.LabelConfidence", "asc")[:3],
                         ["oss://b/b/3.mp4", "oss://b/a/1.jpg", "oss://b/a/2.png"])
        self.assertEqual(self.sorted_by("Labels.LabelConfidence", "desc")[:3],
                         ["oss://b/a/2.png", "oss://b/a/1.jpg", "oss://b/b/3.mp4"])

    def test_without_sort_the_order_is_by_uri(self):
        self.assertEqual(query(self.store, None),
                         ["oss://b/a/1.jpg", "oss://b/a/2.png", "oss://b/b/3.mp4", "oss://b/b/4.txt"])

    def test_pages_give_each_file_once_in_a_stable_order(self):
        files = [{"URI": f"oss://b/p/{i:03d}", "Size": i % 7} for i in range(53)]
        store = FileMetaStore(clock=Clock())
        index(store, *files[:50])
        index(store, *files[50:])
        whole = query(store, None, Sort="Size,URI", Order="desc,asc")
        self.assertEqual(len(whole), 53)
        for size in (1, 2, 5, 10, 52, 53, 100):
            got, calls = all_pages(store, "SimpleQuery", MaxResults=str(size), Sort="Size,URI", Order="desc,asc")
            self.assertEqual(got, whole, f"MaxResults {size}")
            self.assertEqual(calls, -(-53 // size))

    def test_a_file_indexed_or_deleted_between_pages_repeats_no_other(self):
        store = FileMetaStore(clock=Clock())
        index(store, *[{"URI": f"oss://b/{i:02d}", "Size": i} for i in range(10)])
        first = call(store, "SimpleQuery", MaxResults="4", Sort="Size", Order="asc")
        self.assertEqual(uris(first), ["oss://b/00", "oss://b/01", "oss://b/02", "oss://b/03"])
        call(store, "IndexFileMeta", File={"URI": "oss://b/new", "Size": 1})    # before the token
        call(store, "DeleteFileMeta", URI="oss://b/05")
        rest, _ = all_pages(store, "SimpleQuery", MaxResults="4", Sort="Size", Order="asc",
                            NextToken=first["NextToken"])
        self.assertEqual(rest, ["oss://b/04", "oss://b/06", "oss://b/07", "oss://b/08", "oss://b/09"])

    def test_total_hits(self):
        res = call(self.store, "SimpleQuery", Query=leaf("Size", "gt", "50"), MaxResults="1")
        self.assertEqual((len(res["Files"]), res["TotalHits"]), (1, 3))
        self.assertIn("NextToken", res)
        res = call(self.store, "SimpleQuery", MaxResults="1", WithoutTotalHits="true")
        self.assertNotIn("TotalHits", res)
        res = call(self.store, "SimpleQuery", MaxResults="1", WithoutTotalHits="false")
        self.assertEqual(res["TotalHits"], 4)

    def test_max_results(self):
        store = FileMetaStore(clock=Clock())
        index(store, *[{"URI": f"oss://b/{i:03d}"} for i in range(100)])
        index(store, *[{"URI": f"oss://b/{i:03d}"} for i in range(100, 150)])
        self.assertEqual(len(call(store, "SimpleQuery")["Files"]), 100)
        self.assertEqual(len(call(store, "SimpleQuery", MaxResults="0")["Files"]), 100)
        self.assertEqual(len(call(store, "SimpleQuery", MaxResults="100")["Files"]), 100)
        self.assertEqual(len(call(store, "FuzzyQuery", Query="oss", MaxResults="150")["Files"]), 150)
        for bad in ("101", "-1", "1.5", "ten", " 5"):
            self.assertError("InvalidParameter.MaxResults", call, store, "SimpleQuery", MaxResults=bad)
        self.assertError("InvalidParameter.MaxResults", call, store, "FuzzyQuery", Query="x", MaxResults="201")

    def test_bad_tokens(self):
        first = call(self.store, "SimpleQuery", MaxResults="1", Sort="Size")
        deep = base64.urlsafe_b64encode(b"[" * 100000).decode()
        for token in ("garbage!", "e30", first["NextToken"][:-3] + "AAA", "\u00e9t\u00e9", deep):
            self.assertError("InvalidParameter.NextToken", call, self.store, "SimpleQuery", NextToken=token, Sort="Size")
        # a token is for the Sort and Order it was given with
        self.assertError("InvalidParameter.NextToken", call, self.store, "SimpleQuery",
                         NextToken=first["NextToken"], Sort="Size", Order="asc")

    def test_bad_sort_and_order(self):
        for sort in ("a,,b", ",", "a,b,c,d,e,f"):
            self.assertError("InvalidParameter.Sort", call, self.store, "SimpleQuery", Sort=sort)
        for order in ("up", "asc,desc", "asc,"):
            self.assertError("InvalidParameter.Order", call, self.store, "SimpleQuery", Sort="Size", Order=order)


# ---------------------------------------------------------------------------
# Aggregations
# ---------------------------------------------------------------------------

class TestAggregations(ErrorCase):
    def setUp(self):
        self.store = fixture_store()

    def agg(self, field, operation, q=None, **extra):
        res = call(self.store, "SimpleQuery", Query=q, Aggregations=[{"Field": field, "Operation": operation}], **extra)
        self.assertEqual(res["Files"], [])
        self.assertNotIn("NextToken", res)
        (a,) = res["Aggregations"]
        self.assertEqual((a["Field"], a["Operation"]), (field, operation))
        return a

    def test_each_operation(self):
        self.assertEqual(self.agg("Size", "count")["Value"], 4)
        self.assertEqual(self.agg("Size", "sum")["Value"], 100 + 250 + 250.5 + 7)
        self.assertEqual(self.agg("Size", "average")["Value"], (100 + 250 + 250.5 + 7) / 4)
        self.assertEqual(self.agg("Size", "max")["Value"], 250.5)
        self.assertEqual(self.agg("Size", "min")["Value"], 7)
        self.assertEqual(self.agg("CustomLabels.color", "distinct")["Value"], 3)   # red, blue, Red
        self.assertEqual(self.agg("Labels.LabelName", "count")["Value"], 5)        # every label counts
        self.assertEqual(self.agg("Labels.LabelName", "distinct")["Value"], 3)

    def test_over_the_matching_files_only(self):
        q = leaf("URI", "prefix", "oss://b/a/")
        self.assertEqual(self.agg("Size", "sum", q)["Value"], 350)
        self.assertEqual(self.agg("Size", "count", q)["Value"], 2)

    def test_group(self):
        a = self.agg("Labels.LabelName", "group")
        self.assertNotIn("Value", a)
        self.assertEqual(a["Groups"], [{"Value": "fox", "Count": 2}, {"Value": "tree", "Count": 2},
                                       {"Value": "snow", "Count": 1}])
        # equal counts: by the value's text; numbers as JSON writes them
        self.assertEqual([g["Value"] for g in self.agg("Size", "group")["Groups"]], ["100", "250", "250.5", "7"])
        self.assertEqual(len(self.agg("Labels.LabelName", "group", MaxResults="2")["Groups"]), 2)

    def test_no_numbers(self):
        self.assertEqual(self.agg("Title", "sum")["Value"], 0)
        self.assertNotIn("Value", self.agg("Title", "average"))
        self.assertNotIn("Value", self.agg("Nothing", "max"))
        self.assertEqual(self.agg("Nothing", "count")["Value"], 0)

    def test_several_and_total_hits(self):
        res = call(self.store, "SimpleQuery", Aggregations=[{"Field": "Size", "Operation": "max"},
                                                            {"Field": "Size", "Operation": "min"}])
        self.assertEqual([a["Value"] for a in res["Aggregations"]], [250.5, 7])
        self.assertEqual(res["TotalHits"], 4)

    def test_group_limit_is_2000(self):
        store = FileMetaStore(clock=Clock())
        call(store, "SimpleQuery", Aggregations=[{"Field": "Size", "Operation": "group"}], MaxResults="2000")
        self.assertError("InvalidParameter.MaxResults", call, store, "SimpleQuery",
                         Aggregations=[{"Field": "Size", "Operation": "group"}], MaxResults="2001")

    def test_bad_aggregations(self):
        for bad in ({"Field": "Size"}, [{"Field": "Size", "Operation": "median"}], [{"Operation": "sum"}],
                    ["Size"], [{"Field": 3, "Operation": "sum"}]):
            self.assertError("InvalidParameter.Aggregations", call, self.store, "SimpleQuery", Aggregations=bad)


# ---------------------------------------------------------------------------
# FuzzyQuery
# ---------------------------------------------------------------------------

class TestFuzzyQuery(ErrorCase):
    def setUp(self):
        self.store = fixture_store()

    def fq(self, text, **extra):
        return sorted(uris(call(self.store, "FuzzyQuery", Query=text, **extra)))

    def test_text_fields_case_insensitive(self):
        self.assertEqual(self.fq("RED"), ["oss://b/a/1.jpg", "oss://b/a/2.png", "oss://b/b/4.txt"])
        self.assertEqual(self.fq("snow"), ["oss://b/b/3.mp4"])           # a label and the title
        self.assertEqual(self.fq("blu"), ["oss://b/a/2.png"])            # a custom label's value
        self.assertEqual(self.fq("color"), ["oss://b/a/1.jpg", "oss://b/a/2.png", "oss://b/b/4.txt"])  # its key
        self.assertEqual(self.fq("3.mp4"), ["oss://b/b/3.mp4"])          # the URI and Filename

    def test_identifiers_are_not_text(self):
        etag = call(self.store, "GetFileMeta", URI="oss://b/a/1.jpg")["Files"][0]["ETag"].strip('"')
        self.assertEqual(self.fq(etag), [])
        self.assertEqual(self.fq(P), [])

    def test_paged_with_total_hits(self):
        got, calls = all_pages(self.store, "FuzzyQuery", Query="oss", MaxResults="3", Sort="Size", Order="asc")
        self.assertEqual(got, ["oss://b/b/4.txt", "oss://b/a/1.jpg", "oss://b/a/2.png", "oss://b/b/3.mp4"])
        self.assertEqual(calls, 2)
        self.assertEqual(call(self.store, "FuzzyQuery", Query="oss", MaxResults="3")["TotalHits"], 4)

    def test_query_is_required(self):
        self.assertError("MissingParameter", call, self.store, "FuzzyQuery")
        self.assertError("MissingParameter", call, self.store, "FuzzyQuery", Query="")


# ---------------------------------------------------------------------------
# Bad input, every action
# ---------------------------------------------------------------------------

class TestBadInput(ErrorCase):
    def test_bad_requests(self):
        store = FileMetaStore(clock=Clock())
        cases = [
            ("IndexFileMeta", {"ProjectName": None, "File": {"URI": "oss://b/1"}}, "MissingParameter"),
            ("IndexFileMeta", {"DatasetName": "", "File": {"URI": "oss://b/1"}}, "MissingParameter"),
            ("IndexFileMeta", {}, "MissingParameter"),
            ("IndexFileMeta", {"File": {}}, "MissingParameter"),
            ("IndexFileMeta", {"File": "oss://b/1"}, "InvalidParameter.File"),
            ("IndexFileMeta", {"File": {"URI": "http://b/1"}}, "InvalidParameter.File"),
            ("IndexFileMeta", {"File": {"URI": "oss://bucket-only"}}, "InvalidParameter.File"),
            ("IndexFileMeta", {"File": {"URI": "oss://b/1", "CustomLabels": ["a"]}}, "InvalidParameter.File"),
            ("IndexFileMeta", {"File": {"URI": "oss://b/1", "Labels": {"LabelName": "a"}}}, "InvalidParameter.File"),
            ("IndexFileMeta", {"File": {"URI": "oss://b/1", "Size": "10"}}, "InvalidParameter.File"),
            ("IndexFileMeta", {"File": {"URI": "oss://b/1", "Size": -1}}, "InvalidParameter.File"),
            ("BatchIndexFileMeta", {}, "MissingParameter"),
            ("BatchIndexFileMeta", {"Files": []}, "InvalidParameter.Files"),
            ("BatchIndexFileMeta", {"Files": [{"URI": f"oss://b/{i}"} for i in range(101)]}, "InvalidParameter.Files"),
            ("BatchIndexFileMeta", {"Files": [{"URI": "oss://b/1"}, 7]}, "InvalidParameter.Files.2"),
            ("UpdateFileMeta", {}, "MissingParameter"),
            ("GetFileMeta", {}, "MissingParameter"),
            ("GetFileMeta", {"URI": "b/1"}, "InvalidParameter.URI"),
            ("GetFileMeta", {"URI": "oss://b/1", "WithFields": "URI"}, "InvalidParameter.WithFields"),
            ("BatchGetFileMeta", {}, "MissingParameter"),
            ("BatchGetFileMeta", {"URIs": "oss://b/1"}, "InvalidParameter.URIs"),
            ("BatchGetFileMeta", {"URIs": ["oss://b/1", 3]}, "InvalidParameter.URIs"),
            ("BatchGetFileMeta", {"URIs": ["oss://b/1"] * 101}, "InvalidParameter.URIs"),
            ("DeleteFileMeta", {}, "MissingParameter"),
            ("DeleteFileMeta", {"URI": 5}, "InvalidParameter.URI"),
            ("SimpleQuery", {"WithoutTotalHits": "yes"}, "InvalidParameter.WithoutTotalHits"),
            ("SimpleQuery", {"Sort": 5}, "InvalidParameter.Sort"),
            ("FuzzyQuery", {"Query": {"Field": "x"}}, "InvalidParameter.Query"),
        ]
        for action, params, code in cases:
            with self.subTest(action=action, params=str(params)[:80]):
                params = dict(params)
                for name in ("ProjectName", "DatasetName"):
                    if name not in params:
                        params[name] = P if name == "ProjectName" else D
                    elif params[name] is None:
                        del params[name]
                self.assertError(code, store.handle, action, params)
        # and nothing was indexed by any of them
        self.assertEqual(call(store, "SimpleQuery")["TotalHits"], 0)

    def test_random_garbage_gets_an_error_value_never_a_crash(self):
        rng = random.Random(7)
        store = fixture_store()
        atoms = [None, "", "x", "eq", "and", "nested", "not", "Labels", "Labels.LabelName", "Size", "1",
                 0, -1, 1.5, True, [], {}, "oss://b/a/1.jpg", "desc", "asc,desc", "group", "sum"]
        keys = ["Field", "Operation", "Value", "SubQueries", "URI", "CustomLabels", "Labels", "Size"]

        def junk(depth=0):
            roll = rng.random()
            if depth > 3 or roll < 0.5:
                return rng.choice(atoms)
            if roll < 0.7:
                return [junk(depth + 1) for _ in range(rng.randint(0, 3))]
            return {rng.choice(keys): junk(depth + 1) for _ in range(rng.randint(0, 4))}

        names = ["Query", "Aggregations", "Sort", "Order", "MaxResults", "NextToken", "WithFields",
                 "WithoutTotalHits", "File", "Files", "URI", "URIs", "ProjectName", "DatasetName"]
        answered = refused = 0
        for _ in range(3000):
            action = rng.choice(["SimpleQuery", "FuzzyQuery", "IndexFileMeta", "BatchIndexFileMeta",
                                 "UpdateFileMeta", "GetFileMeta", "BatchGetFileMeta", "DeleteFileMeta"])
            params = {"ProjectName": P, "DatasetName": D}
            for name in rng.sample(names, rng.randint(1, 4)):
                params[name] = junk()
            try:
                self.assertIsInstance(store.handle(action, params), dict)
                answered += 1
            except FileMetaError as e:
                self.assertTrue(e.code and e.message and e.status in (400, 404), repr(e))
                refused += 1
        self.assertGreater(answered, 50)     # the junk reaches the actions' work, not only their checks
        self.assertGreater(refused, 1000)

    def test_values_nested_deep_are_refused_without_recursing(self):
        store = FileMetaStore(clock=Clock())
        deep = "x"
        for _ in range(5000):
            deep = {"k": [deep]}
        self.assertError("InvalidParameter.File", call, store, "IndexFileMeta",
                         File={"URI": "oss://b/1", "CustomLabels": {"a": deep}})
        title = ["t"]
        for _ in range(20):
            title = [title]     # 21 levels
        self.assertError("InvalidParameter.Files.1", index, store, {"URI": "oss://b/1", "Title": title})
        ok = "x"
        for _ in range(9):
            ok = {"k": [ok]}
        call(store, "IndexFileMeta", File={"URI": "oss://b/2", "CustomLabels": {"a": ok}})
        self.assertEqual(call(store, "FuzzyQuery", Query="x")["TotalHits"], 1)
        q = leaf("Labels.LabelName", "eq", "x")
        for _ in range(5000):
            q = {"Operation": "and", "SubQueries": [q]}
        for top in ({"Operation": "nested", "SubQueries": [q]}, q):
            self.assertError("InvalidParameter.Query", call, store, "SimpleQuery", Query=top)

    def test_unknown_action_and_non_object_params(self):
        store = FileMetaStore()
        self.assertError("InvalidAction.NotFound", store.handle, "ListBindings", {}, status=404)
        self.assertError("InvalidAction.NotFound", store.handle, "_index", {}, status=404)
        self.assertError("InvalidParameter", store.handle, "SimpleQuery", ["x"])


# ---------------------------------------------------------------------------
# Property check: SimpleQuery against a brute-force evaluator
# ---------------------------------------------------------------------------
#
# The reference below knows the generated files' few fields by name and walks
# them directly; it shares no code with filemeta.py.

WORDS = ["red", "fox", "tree", "snow", "blue", "barn", "sky", "cat"]
COLORS = ["red", "Red", "blue", "green", "gray"]


def random_file(rng, i):
    f = {"URI": f"oss://b/{rng.choice('xyz')}/{i:04d}.jpg", "Size": rng.choice([rng.randint(0, 50), rng.randint(0, 50) + 0.5])}
    if rng.random() < 0.8:
        f["Title"] = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
    labels = {}
    if rng.random() < 0.7:
        labels["color"] = rng.choice(COLORS)
    if rng.random() < 0.6:
        labels["n"] = rng.randint(0, 20)
    if labels or rng.random() < 0.5:
        f["CustomLabels"] = labels
    if rng.random() < 0.7:
        f["Labels"] = [{"LabelName": rng.choice(WORDS), "LabelConfidence": rng.randint(0, 10) / 10}
                       for _ in range(rng.randint(0, 3))]
    return f


def random_leaf(rng, in_labels=False):
    if in_labels:
        field = rng.choice(["Labels.LabelName", "Labels.LabelConfidence"])
    else:
        field = rng.choice(["Size", "Title", "CustomLabels.color", "CustomLabels.n", "Labels.LabelName",
                            "Labels.LabelConfidence", "URI"])
    numeric = field in ("Size", "CustomLabels.n", "Labels.LabelConfidence")
    ops = ["eq", "gt", "gte", "lt", "lte", "exist"]
    if not numeric:
        ops += ["prefix", "match-phrase"] if field == "Title" else ["prefix"]
    op = rng.choice(ops)
    if op == "exist":
        return {"Field": field, "Operation": op}
    if numeric:
        value = rng.choice([str(rng.randint(0, 50)), str(rng.randint(0, 10) / 10), "25.5", "abc"])
    elif field == "URI":
        value = rng.choice(["oss://b/x/", "oss://b/y/00", "oss://b/z/0010.jpg", "oss://"])
    elif field == "Title" and op == "match-phrase":
        value = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 2))).upper()
    elif field == "Title":
        value = rng.choice(WORDS + ["r", "s", ""])
    elif field == "CustomLabels.color":
        value = rng.choice(COLORS + ["b", "r"])
    else:
        value = rng.choice(WORDS + ["t"])
    return {"Field": field, "Operation": op, "Value": value}


def random_query(rng, depth=0, in_labels=False):
    roll = rng.random()
    if depth >= 3 or roll < 0.4:
        return random_leaf(rng, in_labels)
    if not in_labels and roll < 0.5:
        inner = [{"Operation": rng.choice(["and", "or", "not"]),
                  "SubQueries": [random_leaf(rng, True) for _ in range(rng.randint(1, 3))]}
                 for _ in range(rng.randint(1, 2))]
        return {"Operation": "nested", "SubQueries": inner}
    return {"Operation": rng.choice(["and", "or", "not"]),
            "SubQueries": [random_query(rng, depth + 1, in_labels) for _ in range(rng.randint(1, 3))]}


def ref_values(obj, field):
    if field == "Labels.LabelName" or field == "Labels.LabelConfidence":
        key = field.split(".")[1]
        return [label[key] for label in obj.get("Labels", []) if key in label]
    if field.startswith("CustomLabels."):
        labels = obj.get("CustomLabels", {})
        key = field[len("CustomLabels."):]
        return [labels[key]] if key in labels else []
    if field.startswith("."):                 # a field of one label, under nested
        return [obj[field[1:]]] if field[1:] in obj else []
    return [obj[field]] if field in obj else []


def ref_leaf(values, op, value):
    if op == "exist":
        return len(values) > 0
    for v in values:
        if op == "prefix":
            if isinstance(v, str) and v[:len(value)] == value:
                return True
        elif op == "match-phrase":
            have = " " + " ".join(w for w in re.split(r"[^a-z0-9]+", v.lower()) if w) + " "
            want = " ".join(w for w in re.split(r"[^a-z0-9]+", value.lower()) if w)
            if want and (" " + want + " ") in have:
                return True
        else:
            if isinstance(v, str):
                a, b = v, value
            else:
                try:
                    a, b = v, float(value)
                except ValueError:
                    continue
            if {"eq": a == b, "gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[op]:
                return True
    return False


def ref_match(q, obj, label=None):
    op = q["Operation"]
    if op == "and":
        return all(ref_match(s, obj, label) for s in q["SubQueries"])
    if op == "or":
        return any(ref_match(s, obj, label) for s in q["SubQueries"])
    if op == "not":
        return not any(ref_match(s, obj, label) for s in q["SubQueries"])
    if op == "nested":
        return any(all(ref_match(s, obj, one) for s in q["SubQueries"]) for one in obj.get("Labels", []))
    if label is not None:
        return ref_leaf(ref_values(label, "." + q["Field"].split(".")[1]), op, q.get("Value"))
    return ref_leaf(ref_values(obj, q["Field"]), op, q.get("Value"))


def ref_sort(files, fields, orders):
    """Stable sorts, least significant first; files without the field go last."""
    out = sorted(files, key=lambda f: f["URI"])
    for field, order in reversed(list(zip(fields, orders))):
        have = [f for f in out if ref_values(f, field)]
        lack = [f for f in out if not ref_values(f, field)]
        have.sort(key=lambda f: ref_values(f, field)[0], reverse=(order == "desc"))
        out = have + lack
    return [f["URI"] for f in out]


def ref_aggregate(files, field, operation, groups):
    values = [v for f in files for v in ref_values(f, field)]
    numbers = [v for v in values if not isinstance(v, str)]
    out = {"Field": field, "Operation": operation}
    if operation == "group":
        counts = {}
        for v in values:
            text = v if isinstance(v, str) else ("%d" % v if v == int(v) else repr(v))
            counts[text] = counts.get(text, 0) + 1
        out["Groups"] = [{"Value": t, "Count": counts[t]}
                         for t in sorted(counts, key=lambda t: (-counts[t], t))][:groups]
    elif operation == "count":
        out["Value"] = len(values)
    elif operation == "distinct":
        out["Value"] = len(set(values))
    elif operation == "sum":
        out["Value"] = sum(numbers)
    elif numbers:
        out["Value"] = {"average": sum(numbers) / len(numbers) if numbers else None,
                        "max": max(numbers), "min": min(numbers)}[operation]
    return out


class TestAgainstBruteForce(unittest.TestCase):
    def test_random_queries(self):
        rng = random.Random(20201930)
        checked = matched = 0
        for round_ in range(40):
            store = FileMetaStore(clock=Clock())
            files = [random_file(rng, i) for i in range(rng.randint(0, 40))]
            for f in files:
                call(store, "IndexFileMeta", File=f)
            for _ in range(25):
                q = random_query(rng)
                fields = rng.sample(["Size", "Title", "CustomLabels.n", "CustomLabels.color"], rng.randint(0, 2))
                orders = [rng.choice(["asc", "desc"]) for _ in fields]
                want = [u for u in ref_sort(files, fields, orders)
                        if ref_match(q, next(f for f in files if f["URI"] == u))]
                params = {"Query": q, "MaxResults": str(rng.randint(1, 7))}
                if fields:
                    params.update(Sort=",".join(fields), Order=",".join(orders))
                got, _ = all_pages(store, "SimpleQuery", **params)
                self.assertEqual(got, want, f"round {round_}: query {q} sort {fields} {orders}")
                total = call(store, "SimpleQuery", Query=q)["TotalHits"]
                self.assertEqual(total, len(want))
                field = rng.choice(["Size", "CustomLabels.color", "CustomLabels.n", "Labels.LabelName"])
                operation = rng.choice(["count", "sum", "average", "max", "min", "distinct", "group"])
                got = call(store, "SimpleQuery", Query=q, Aggregations=[{"Field": field, "Operation": operation}],
                           MaxResults="3")["Aggregations"][0]
                hits = [f for f in files if f["URI"] in want]
                self.assertEqual(got, ref_aggregate(hits, field, operation, 3), f"{operation} of {field} for {q}")
                checked += 1
                matched += len(want)
        # the generator must give queries that match something and queries that do not
        self.assertGreater(matched, checked)
        self.assertGreater(checked, 900)


if __name__ == "__main__":
    unittest.main()
