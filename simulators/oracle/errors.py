"""The ORA errors the double raises, as python-oracledb raises them.

Each is an `oracledb.DatabaseError` whose first argument is oracledb's own error object,
so `exc.args[0].full_code == 'ORA-01113'` and `.message` holds every line Oracle would
print (e.g. ORA-01113 followed by ORA-01110 naming the file).
"""

from __future__ import annotations

import oracledb
import oracledb.errors as _oe

TEXT = {
    34: "ORACLE not available",
    205: "error in identifying control file, check alert log for more info",
    258: "manual archiving in NOARCHIVELOG mode must identify log",
    264: "no recovery required",
    308: "cannot open archived log '{0}'",
    900: "invalid SQL statement",
    942: "table or view does not exist",
    1017: "invalid username/password; logon denied",
    1034: "ORACLE not available",
    1081: "cannot start already-running ORACLE - shut it down first",
    1100: "database already mounted",
    1109: "database not open",
    1110: "data file {0}: '{1}'",
    1113: "file {0} needs media recovery",
    1115: "IO error reading block from file {0} (block # 1)",
    1122: "database file {0} failed verification check",
    1123: "cannot start online backup; media recovery not enabled",
    1126: "database must be mounted in this instance and not open in any instance",
    1139: "RESETLOGS option only valid after an incomplete database recovery",
    1142: "cannot end online backup - none of the files are in backup",
    1146: "cannot start online backup - file {0} is already in backup",
    1149: "cannot shutdown - file {0} has online backup set",
    1152: "file {0} was not restored from a sufficiently old backup",
    1157: "cannot identify/lock data file {0} - see DBWR trace file",
    1190: "control file or data file {0} is from before the last RESETLOGS",
    1194: "file {0} needs more recovery to be consistent",
    1195: "online backup of file {0} needs more recovery to be consistent",
    1507: "database not mounted",
    1531: "a database already open by the instance",
    1547: "warning: RECOVER succeeded but OPEN RESETLOGS would get error below",
    1589: "must use RESETLOGS or NORESETLOGS option for database open",
    1610: "recovery using the BACKUP CONTROLFILE option must be done",
    3113: "end-of-file on communication channel",
    10873: "file {0} needs to be either taken out of backup mode or media recovered",
    12514: "TNS:listener does not currently know of service requested in connect descriptor",
    12541: "TNS:no listener",
    22288: "file or LOB operation FILEOPEN failed",
    27037: "unable to obtain file status",
}


def line(code: int, *args: object) -> str:
    return f"ORA-{code:05d}: " + TEXT[code].format(*args)


def ora(code: int, *args: object, more: list[str] | None = None) -> oracledb.DatabaseError:
    """The DatabaseError Oracle raises for `code` (extra lines follow the first)."""
    text = "\n".join([line(code, *args), *(more or [])])
    return oracledb.DatabaseError(_oe._Error(text, code=code))


def file_error(code: int, file_no: int, name: str) -> oracledb.DatabaseError:
    """A datafile error followed by ORA-01110 naming the file, as Oracle prints it."""
    return ora(code, file_no, more=[line(1110, file_no, name)])


def dropped() -> oracledb.DatabaseError:
    """The connection was lost (the server side went away mid-call)."""
    return ora(3113)
