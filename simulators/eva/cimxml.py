"""CIM-XML over HTTP for the faked repository: parse requests, build responses.

Why pywbem's own pieces: the request parser (TupleParser knows IMETHODCALL/METHODCALL)
and the XML builders (`_cim_xml`) are exactly what the client side uses, so a real
`pywbem.WBEMConnection` reads our answers the way it reads a real provider's. Only the
operations an SMI-S client of this array needs are served; others get
CIM_ERR_NOT_SUPPORTED.
"""

from __future__ import annotations

from typing import Any

import pywbem
from pywbem import CIMClassName, CIMError, CIMInstanceName, CIMParameter
from pywbem import _cim_xml as X  # noqa: N812
from pywbem._cim_obj import cimvalue
from pywbem._cim_types import atomic_to_cim_xml, cimtype
from pywbem._tupleparse import TupleParser
from pywbem._tupletree import xml_to_tupletree_sax

from simulators.eva.cim import EvaConnection

HOST = "localhost"
_BOOL = ("LocalOnly", "DeepInheritance", "IncludeQualifiers", "IncludeClassOrigin")


def _local(p: CIMInstanceName) -> Any:
    return p.tocimxml(ignore_host=True, ignore_namespace=True)


def _full(p: CIMInstanceName) -> Any:
    p = p.copy()
    p.host = HOST
    return p.tocimxml()


def _value(obj: Any) -> Any:
    if isinstance(obj, (CIMClassName, CIMInstanceName)):
        return X.VALUE_REFERENCE(_full(obj))
    if isinstance(obj, list):
        if obj and isinstance(obj[0], CIMInstanceName):
            return X.VALUE_REFARRAY([_value(x) for x in obj])
        return X.VALUE_ARRAY([_value(x) for x in obj])
    return X.VALUE(atomic_to_cim_xml(obj))


def _imethod(conn: EvaConnection, name: str, ns: str, params: dict[str, Any]) -> Any:
    for k in _BOOL:
        if isinstance(params.get(k), str):
            params[k] = params[k].lower() == "true"
    if isinstance(params.get("ClassName"), str):
        params["ClassName"] = CIMClassName(params["ClassName"])
    if name not in ("GetInstance", "EnumerateInstances", "EnumerateInstanceNames",
                    "References", "ReferenceNames", "Associators", "AssociatorNames",
                    "GetClass", "EnumerateClassNames"):
        raise CIMError(pywbem.CIM_ERR_NOT_SUPPORTED, f"{name} is not supported here")
    result = conn._mock_imethodcall(name, ns, **params)
    objs = result[0][2] if result else []
    if name in ("GetInstance", "GetClass"):
        return [X.IRETURNVALUE([objs[0].tocimxml(ignore_path=True)])]
    if name == "EnumerateInstances":
        return [X.IRETURNVALUE([X.VALUE_NAMEDINSTANCE(_local(i.path), i.tocimxml(ignore_path=True))
                                for i in objs])]
    if name == "EnumerateInstanceNames":
        return [X.IRETURNVALUE([_local(p) for p in objs])]
    if name == "EnumerateClassNames":
        return [X.IRETURNVALUE([X.CLASSNAME(c) for c in objs])]
    items = [o[2] for o in objs]  # ('OBJECTPATH', {}, obj) tuples
    if name in ("ReferenceNames", "AssociatorNames"):
        return [X.IRETURNVALUE([X.OBJECTPATH(_full(p)) for p in items])]
    return [X.IRETURNVALUE([X.VALUE_OBJECTWITHPATH(_full(i.path), i.tocimxml(ignore_path=True))
                            for i in items])]


def _method(conn: EvaConnection, name: str, path: Any, raw: list[Any]) -> Any:
    params = []
    for pname, ptype, val in raw:
        if ptype == "reference" or isinstance(val, CIMInstanceName):
            typed, ptype = val, "reference"
        elif isinstance(val, list):
            typed = [cimvalue(x, ptype) if not isinstance(x, CIMInstanceName) else x
                     for x in val]
            if val and isinstance(val[0], CIMInstanceName):
                ptype = "reference"
        elif ptype == "boolean" and isinstance(val, str):  # cimvalue() makes "false" True
            typed = val.strip().lower() == "true"
        else:
            typed = cimvalue(val, ptype)
        params.append(CIMParameter(pname, ptype, value=typed))
    rv, out = conn._mock_methodcall(name, path, Params=params)
    body = [X.RETURNVALUE(X.VALUE(atomic_to_cim_xml(rv)), param_type="uint32")]
    for pname, val in out.items():
        if val is None:
            continue
        ptype = "reference" if isinstance(val, CIMInstanceName) or (
            isinstance(val, list) and val and isinstance(val[0], CIMInstanceName)) else \
            cimtype(val)
        body.append(X.PARAMVALUE(pname, _value(val), ptype))
    return body


def handle(conn: EvaConnection, body: bytes) -> bytes:
    """One CIM-XML request in, one response out (errors as an ERROR element)."""
    tp = TupleParser()
    tree = xml_to_tupletree_sax(body, "CIM-XML request")
    message = tp.parse_cim(tree)[2]  # the parser descends: CIM > MESSAGE > SIMPLEREQ > call
    msg_id = message[1]["ID"]
    req = message[2][2]
    kind, name = req[0], req[1]["NAME"]
    try:
        if kind == "IMETHODCALL":
            rsp = X.IMETHODRESPONSE(name, _imethod(conn, name, req[2], dict(req[3])))
        else:
            rsp = X.METHODRESPONSE(name, _method(conn, name, req[2], req[3]))
    except CIMError as e:
        err = X.ERROR(str(e.status_code), e.status_description)
        make = X.IMETHODRESPONSE if kind == "IMETHODCALL" else X.METHODRESPONSE
        rsp = make(name, err)
    xml = X.CIM(X.MESSAGE(X.SIMPLERSP(rsp), msg_id, "1.0"), "2.0", "2.0")
    return xml.toxml().encode("utf-8")
