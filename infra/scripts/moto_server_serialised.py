"""moto_server with its DynamoDB backend serialised: one request at a time.

moto_server answers requests on threads and its DynamoDB backend takes no lock. A
TransactWriteItems that fails rolls back by putting back a copy of each table taken when
it began (moto 5.2.5, `DynamoDBBackend.transact_write_items`), which erases whatever other
requests wrote meanwhile. Real DynamoDB never loses a committed write, and the racing
tests (many conditional transactions on one item, most of them failing) exist to prove
Recoup never double-charges. So every public method of the backend runs under one lock
here. The other services (SQS, EventBridge) are left as moto serves them: an SQS long poll
must not hold up everything else.

Same arguments as moto_server.
"""

import functools
import inspect
import sys
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main

_LOCK = threading.RLock()


def _serialised(method):
    @functools.wraps(method)
    def run(*args, **kwargs):
        with _LOCK:
            return method(*args, **kwargs)

    return run


for _name, _method in list(vars(DynamoDBBackend).items()):
    if inspect.isfunction(_method) and not _name.startswith("_"):
        setattr(DynamoDBBackend, _name, _serialised(_method))

if __name__ == "__main__":
    sys.exit(main())
