-- vcard-temp (XEP-0054): the serialised <vCard/> of each account.
CREATE TABLE vcards (
    username TEXT PRIMARY KEY NOT NULL,
    vcard TEXT NOT NULL
);
