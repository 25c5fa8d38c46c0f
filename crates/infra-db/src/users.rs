//! [`UserRepository`] on sea-orm.

use domain::{User, UserId, Username};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use usecase::ports::{Entity, NewUser, RepoError, UserCredentials, UserRepository};

use crate::SeaOrmStore;
use crate::convert::{to_user, ts, uuid};
use crate::entity::users;
use crate::error::{classify, to_repo_error};

impl UserRepository for SeaOrmStore {
    async fn create_user(&self, user: NewUser) -> Result<User, RepoError> {
        let row = users::ActiveModel {
            id: Set(uuid(user.id.as_u128())),
            username: Set(user.username.as_str().to_owned()),
            username_canonical: Set(user.username.canonical()),
            password_hash: Set(user.password_hash),
            disabled: Set(false),
            created_at: Set(ts(user.created_at)),
            updated_at: Set(ts(user.created_at)),
        }
        .insert(&self.write)
        .await
        .map_err(|e| classify(e, "username is taken", Entity::User))?;
        to_user(row)
    }

    async fn find_credentials(
        &self,
        username: &Username,
    ) -> Result<Option<UserCredentials>, RepoError> {
        let row = users::Entity::find()
            .filter(users::Column::UsernameCanonical.eq(username.canonical()))
            .one(&self.read)
            .await
            .map_err(to_repo_error)?;
        row.map(|row| {
            let password_hash = row.password_hash.clone();
            Ok(UserCredentials {
                user: to_user(row)?,
                password_hash,
            })
        })
        .transpose()
    }

    async fn get_user(&self, id: UserId) -> Result<User, RepoError> {
        users::Entity::find_by_id(uuid(id.as_u128()))
            .one(&self.read)
            .await
            .map_err(to_repo_error)?
            .ok_or(RepoError::NotFound(Entity::User))
            .and_then(to_user)
    }
}
