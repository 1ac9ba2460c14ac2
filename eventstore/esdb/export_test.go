package esdb

// ExpectedRevision exposes the expected-version mapping to the tests.
var ExpectedRevision = expectedRevision
