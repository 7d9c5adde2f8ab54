"""docs/openapi.yaml (issue 16 item 6): the document is valid OpenAPI 3.1
and describes exactly the routes src/api.c serves; the response and webhook
checks the harness runs on every answer do catch a mismatch."""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import openapi_check  # noqa: E402


class TestDocument(unittest.TestCase):
    def test_document_is_valid_and_complete(self):
        self.assertEqual(openapi_check.check_document(), [])

    def test_response_check_catches_mismatches(self):
        ok = (b'{"uid":"a","calendar_id":1,"title":"t","start":"2026-11-24T09:00:00Z",'
              b'"end":"2026-11-24T10:00:00Z","status":"accepted","needs_review":false,'
              b'"event_id":null,"write_state":"none","updated_at":"2026-11-24T08:00:00Z"}')
        openapi_check.validate_response("GET", "/v1/bookings/a", 200, ok, "application/json")
        for bad in (ok.replace(b'"accepted"', b'"maybe"'),            # enum
                    ok.replace(b'"needs_review":false', b'"needs_review":0'),  # type
                    ok.replace(b',"write_state":"none"', b''),         # required
                    ok[:-1] + b',"surprise":1}'):                      # unknown field
            with self.assertRaises(AssertionError):
                openapi_check.validate_response("GET", "/v1/bookings/a", 200, bad,
                                                "application/json")
        with self.assertRaises(AssertionError):   # a status the route does not answer
            openapi_check.validate_response("GET", "/v1/bookings/a", 418, b"{}",
                                            "application/json")
        with self.assertRaises(AssertionError):   # an error without its shape
            openapi_check.validate_response("GET", "/nowhere", 404, b'{"error":"x"}',
                                            "application/json")

    def test_webhook_check_catches_mismatches(self):
        hook = {"triggerEvent": "CALENDAR_ERROR", "createdAt": "2026-11-24T08:00:00Z",
                "payload": {"calendarId": 1, "state": "revoked", "reason": "invalid_grant"}}
        openapi_check.validate_webhook(hook)
        hook["payload"]["state"] = "sad"
        with self.assertRaises(AssertionError):
            openapi_check.validate_webhook(hook)


if __name__ == "__main__":
    unittest.main()
