//! Auth: authenticate, enable and disable auth, users, roles and permissions.

use crate::client::Client;
use crate::error::EtcdError;
use crate::pb::authpb::{permission, Permission, UserAddOptions};
use crate::pb::etcdserverpb::{
    auth_rpc, AuthDisableRequest, AuthDisableResponse, AuthEnableRequest, AuthEnableResponse,
    AuthRoleAddRequest, AuthRoleAddResponse, AuthRoleDeleteRequest, AuthRoleDeleteResponse,
    AuthRoleGetRequest, AuthRoleGetResponse, AuthRoleGrantPermissionRequest,
    AuthRoleGrantPermissionResponse, AuthRoleListRequest, AuthRoleListResponse,
    AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse, AuthStatusRequest,
    AuthStatusResponse, AuthUserAddRequest, AuthUserAddResponse, AuthUserChangePasswordRequest,
    AuthUserChangePasswordResponse, AuthUserDeleteRequest, AuthUserDeleteResponse,
    AuthUserGetRequest, AuthUserGetResponse, AuthUserGrantRoleRequest, AuthUserGrantRoleResponse,
    AuthUserListRequest, AuthUserListResponse, AuthUserRevokeRoleRequest,
    AuthUserRevokeRoleResponse, AuthenticateRequest, AuthenticateResponse,
};
use bytes::Bytes;
use http::HeaderValue;

pub use permission::Type as PermissionType;

impl Client {
    /// Authenticates as `user`; the token is kept and sent with every later call and stream
    /// (as the `token` metadata), and the credentials too, to authenticate again when the
    /// token goes stale (see [`Config::user`](crate::Config::user)).
    pub fn authenticate(
        &self,
        user: impl Into<String>,
        password: impl Into<String>,
        callback: impl FnOnce(Result<AuthenticateResponse, EtcdError>) + 'static,
    ) {
        let (user, password) = (user.into(), password.into());
        let req = AuthenticateRequest { name: user.clone(), password: password.clone() };
        let weak = self.weak();
        self.call::<auth_rpc::Authenticate>("authenticate", &req, move |res| {
            if let (Ok(resp), Some(client)) = (&res, Client::upgrade(&weak)) {
                if let Ok(token) = HeaderValue::from_str(&resp.token) {
                    client.with_core(|c| c.set_auth(token, user, password));
                }
            }
            callback(res);
        });
    }

    /// Turns authentication on (a `root` user with the `root` role must exist).
    pub fn auth_enable(
        &self,
        callback: impl FnOnce(Result<AuthEnableResponse, EtcdError>) + 'static,
    ) {
        self.call::<auth_rpc::AuthEnable>("auth_enable", &AuthEnableRequest {}, callback);
    }

    /// Turns authentication off; the client then drops its token and its credentials.
    pub fn auth_disable(
        &self,
        callback: impl FnOnce(Result<AuthDisableResponse, EtcdError>) + 'static,
    ) {
        let weak = self.weak();
        self.call::<auth_rpc::AuthDisable>("auth_disable", &AuthDisableRequest {}, move |res| {
            if let (Ok(_), Some(client)) = (&res, Client::upgrade(&weak)) {
                client.with_core(|c| c.clear_auth());
            }
            callback(res);
        });
    }

    /// Whether authentication is on, and the auth store's revision.
    pub fn auth_status(
        &self,
        callback: impl FnOnce(Result<AuthStatusResponse, EtcdError>) + 'static,
    ) {
        self.call::<auth_rpc::AuthStatus>("auth_status", &AuthStatusRequest {}, callback);
    }

    /// Adds a user with a password.
    pub fn user_add(
        &self,
        user: impl Into<String>,
        password: impl Into<String>,
        callback: impl FnOnce(Result<AuthUserAddResponse, EtcdError>) + 'static,
    ) {
        let req = AuthUserAddRequest {
            name: user.into(),
            password: password.into(),
            options: Some(UserAddOptions { no_password: false }),
            hashed_password: String::new(),
        };
        self.call::<auth_rpc::UserAdd>("user_add", &req, callback);
    }

    /// Adds a user that has no password: it cannot authenticate with one, only with a
    /// client certificate (etcd's `--no-password`).
    pub fn user_add_no_password(
        &self,
        user: impl Into<String>,
        callback: impl FnOnce(Result<AuthUserAddResponse, EtcdError>) + 'static,
    ) {
        let req = AuthUserAddRequest {
            name: user.into(),
            password: String::new(),
            options: Some(UserAddOptions { no_password: true }),
            hashed_password: String::new(),
        };
        self.call::<auth_rpc::UserAdd>("user_add", &req, callback);
    }

    /// Deletes a user.
    pub fn user_delete(
        &self,
        user: impl Into<String>,
        callback: impl FnOnce(Result<AuthUserDeleteResponse, EtcdError>) + 'static,
    ) {
        let req = AuthUserDeleteRequest { name: user.into() };
        self.call::<auth_rpc::UserDelete>("user_delete", &req, callback);
    }

    /// Changes a user's password.
    pub fn user_change_password(
        &self,
        user: impl Into<String>,
        password: impl Into<String>,
        callback: impl FnOnce(Result<AuthUserChangePasswordResponse, EtcdError>) + 'static,
    ) {
        let req = AuthUserChangePasswordRequest {
            name: user.into(),
            password: password.into(),
            hashed_password: String::new(),
        };
        self.call::<auth_rpc::UserChangePassword>("user_change_password", &req, callback);
    }

    /// A user's roles.
    pub fn user_get(
        &self,
        user: impl Into<String>,
        callback: impl FnOnce(Result<AuthUserGetResponse, EtcdError>) + 'static,
    ) {
        let req = AuthUserGetRequest { name: user.into() };
        self.call::<auth_rpc::UserGet>("user_get", &req, callback);
    }

    /// Every user.
    pub fn user_list(
        &self,
        callback: impl FnOnce(Result<AuthUserListResponse, EtcdError>) + 'static,
    ) {
        self.call::<auth_rpc::UserList>("user_list", &AuthUserListRequest {}, callback);
    }

    /// Grants `role` to `user`.
    pub fn user_grant_role(
        &self,
        user: impl Into<String>,
        role: impl Into<String>,
        callback: impl FnOnce(Result<AuthUserGrantRoleResponse, EtcdError>) + 'static,
    ) {
        let req = AuthUserGrantRoleRequest { user: user.into(), role: role.into() };
        self.call::<auth_rpc::UserGrantRole>("user_grant_role", &req, callback);
    }

    /// Revokes `role` from `user`.
    pub fn user_revoke_role(
        &self,
        user: impl Into<String>,
        role: impl Into<String>,
        callback: impl FnOnce(Result<AuthUserRevokeRoleResponse, EtcdError>) + 'static,
    ) {
        let req = AuthUserRevokeRoleRequest { name: user.into(), role: role.into() };
        self.call::<auth_rpc::UserRevokeRole>("user_revoke_role", &req, callback);
    }

    /// Adds a role.
    pub fn role_add(
        &self,
        role: impl Into<String>,
        callback: impl FnOnce(Result<AuthRoleAddResponse, EtcdError>) + 'static,
    ) {
        let req = AuthRoleAddRequest { name: role.into() };
        self.call::<auth_rpc::RoleAdd>("role_add", &req, callback);
    }

    /// Deletes a role.
    pub fn role_delete(
        &self,
        role: impl Into<String>,
        callback: impl FnOnce(Result<AuthRoleDeleteResponse, EtcdError>) + 'static,
    ) {
        let req = AuthRoleDeleteRequest { role: role.into() };
        self.call::<auth_rpc::RoleDelete>("role_delete", &req, callback);
    }

    /// A role's permissions.
    pub fn role_get(
        &self,
        role: impl Into<String>,
        callback: impl FnOnce(Result<AuthRoleGetResponse, EtcdError>) + 'static,
    ) {
        let req = AuthRoleGetRequest { role: role.into() };
        self.call::<auth_rpc::RoleGet>("role_get", &req, callback);
    }

    /// Every role.
    pub fn role_list(
        &self,
        callback: impl FnOnce(Result<AuthRoleListResponse, EtcdError>) + 'static,
    ) {
        self.call::<auth_rpc::RoleList>("role_list", &AuthRoleListRequest {}, callback);
    }

    /// Grants `role` the permission `perm` on `key`, or on `[key, range_end)` when
    /// `range_end` is not empty (`"\0"`: every key from `key` on).
    pub fn role_grant_permission(
        &self,
        role: impl Into<String>,
        perm: PermissionType,
        key: impl Into<Bytes>,
        range_end: impl Into<Bytes>,
        callback: impl FnOnce(Result<AuthRoleGrantPermissionResponse, EtcdError>) + 'static,
    ) {
        let perm =
            Permission { perm_type: perm as i32, key: key.into(), range_end: range_end.into() };
        let req = AuthRoleGrantPermissionRequest { name: role.into(), perm: Some(perm) };
        self.call::<auth_rpc::RoleGrantPermission>("role_grant_permission", &req, callback);
    }

    /// Revokes `role`'s permission on `key` (or `[key, range_end)`).
    pub fn role_revoke_permission(
        &self,
        role: impl Into<String>,
        key: impl Into<Bytes>,
        range_end: impl Into<Bytes>,
        callback: impl FnOnce(Result<AuthRoleRevokePermissionResponse, EtcdError>) + 'static,
    ) {
        let req = AuthRoleRevokePermissionRequest {
            role: role.into(),
            key: key.into(),
            range_end: range_end.into(),
        };
        self.call::<auth_rpc::RoleRevokePermission>("role_revoke_permission", &req, callback);
    }
}
