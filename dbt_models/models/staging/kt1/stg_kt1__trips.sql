-- One row per kt1 trip id: redelivered copies removed, and of several versions of a trip (KT1
-- may send a trip again as it changes) the last landed one wins.
{{ daily_table('day') }}

with source as (
    {{ lake_source('kt1', 'trips', {
        'batch_id': 'varchar',
        'item_index': 'integer',
        'fetched_at': 'timestamptz',
        'landed_at': 'timestamptz',
        'id': 'varchar',
        'asset_id': 'varchar',
        'asset_name': 'varchar',
        'trip_type': 'varchar',
        'date_start': 'timestamptz',
        'date_end': 'timestamptz',
        'start_lat': 'double',
        'start_lon': 'double',
        'start_address': 'varchar',
        'end_lat': 'double',
        'end_lon': 'double',
        'end_address': 'varchar',
        'stats_drive_time': 'double',
        'stats_idle_time': 'double',
        'stats_distance': 'double',
        'records': 'double',
        'maxes_speed': 'double',
        'day': 'date',
    }) }}
),

typed as (
    select
        md5('kt1|' || id) as kt1_trip_id,
        id as source_trip_id,
        asset_id as source_vehicle_id,
        asset_name,
        trip_type,
        cast(date_start as timestamptz) as started_at,
        cast(date_end as timestamptz) as ended_at,
        stats_drive_time as drive_time_s,
        stats_idle_time as idle_time_s,
        stats_distance as distance_km,
        maxes_speed as max_speed_kmh,
        records as telemetry_records,
        start_lat,
        start_lon,
        start_address,
        end_lat,
        end_lon,
        end_address,
        {{ kt1_landing_columns() }},
        date_diff('second', cast(date_start as timestamptz), cast(date_end as timestamptz))
            as duration_s
    from source
),

final as (
    {{ latest_landing('typed', 'source_trip_id') }}
)

select * from final
